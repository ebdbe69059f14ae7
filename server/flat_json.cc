#include "flat_json.h"

namespace ratelimit::server {
namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A string without escapes of printable ASCII; `p` is at its opening quote.
bool read_string(std::string_view t, std::size_t& p, std::string_view& out) {
  const std::size_t start = ++p;
  for (; p < t.size(); ++p) {
    const auto c = static_cast<unsigned char>(t[p]);
    if (c == '"') {
      out = t.substr(start, p - start);
      ++p;
      return true;
    }
    if (c == '\\' || c < 0x20 || c >= 0x7f) return false;
  }
  return false;
}

// -?(0|[1-9][0-9]{0,17}), not "-0", followed by a delimiter.
bool read_integer(std::string_view t, std::size_t& p, FlatField& f) {
  const std::size_t start = p;
  const bool negative = t[p] == '-';
  if (negative) ++p;
  if (p >= t.size() || t[p] < '0' || t[p] > '9') return false;
  std::int64_t v = 0;
  std::size_t digits = 0;
  for (; p < t.size() && t[p] >= '0' && t[p] <= '9'; ++p, ++digits) {
    if (digits == 18) return false;  // more would not fit (and 19 digits may not)
    v = v * 10 + (t[p] - '0');
  }
  if (digits > 1 && t[start + (negative ? 1 : 0)] == '0') return false;
  if (negative && v == 0) return false;
  if (p < t.size() && (t[p] == '.' || t[p] == 'e' || t[p] == 'E')) return false;
  f.integer = negative ? -v : v;
  f.text = t.substr(start, p - start);
  return true;
}

}  // namespace

bool FlatJson::parse(std::string_view t) {
  n_ = 0;
  std::size_t p = 0;
  auto skip = [&] {
    while (p < t.size() && space(t[p])) ++p;
  };
  skip();
  if (p >= t.size() || t[p] != '{') return false;
  ++p;
  skip();
  if (p < t.size() && t[p] == '}') {
    ++p;
  } else {
    for (;;) {
      if (n_ == kMaxFields || p >= t.size() || t[p] != '"') return false;
      FlatField f;
      if (!read_string(t, p, f.key)) return false;
      if (find(f.key) != nullptr) return false;  // a duplicate: the full parser decides
      skip();
      if (p >= t.size() || t[p] != ':') return false;
      ++p;
      skip();
      if (p >= t.size()) return false;
      if (t[p] == '"') {
        f.is_string = true;
        if (!read_string(t, p, f.text)) return false;
      } else if (!read_integer(t, p, f)) {
        return false;
      }
      fields_[n_++] = f;
      skip();
      if (p < t.size() && t[p] == ',') {
        ++p;
        skip();
        continue;
      }
      if (p < t.size() && t[p] == '}') {
        ++p;
        break;
      }
      return false;
    }
  }
  skip();
  return p == t.size();
}

const FlatField* FlatJson::find(std::string_view key) const {
  for (std::size_t i = 0; i < n_; ++i) {
    if (fields_[i].key == key) return &fields_[i];
  }
  return nullptr;
}

}  // namespace ratelimit::server
