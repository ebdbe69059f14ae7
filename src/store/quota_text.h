// Internal: a quota as one short text ("rpm tpm rpd input output day", day 0: first request,
// 1: Pacific midnight), for stores that keep a quota in one field (SQLite's rl_meta, Redis's
// hashes).
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/quota.h"

namespace ratelimit::detail {

inline std::string encode_quota(const ModelQuota& q) {
  return std::to_string(q.max_rpm) + " " + std::to_string(q.max_tpm) + " " +
         std::to_string(q.max_rpd) + " " + std::to_string(q.max_input_tpm) + " " +
         std::to_string(q.max_output_tpm) + " " +
         (q.day_start == DayStart::pacific_midnight ? "1" : "0");
}

// nullopt: malformed (a negative limit, a missing field, anything after the last).
inline std::optional<ModelQuota> decode_quota(std::string_view text) {
  std::int64_t v[6];
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 6; ++i) {
    if (i > 0) {
      if (p == end || *p != ' ') return std::nullopt;
      ++p;
    }
    auto r = std::from_chars(p, end, v[i]);
    if (r.ec != std::errc() || v[i] < 0) return std::nullopt;
    p = r.ptr;
  }
  if (p != end || v[5] > 1) return std::nullopt;
  return ModelQuota{v[0], v[1], v[2],
                    v[3], v[4], v[5] == 1 ? DayStart::pacific_midnight : DayStart::first_request};
}

}  // namespace ratelimit::detail
