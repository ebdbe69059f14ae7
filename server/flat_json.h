// Internal to the server: a parser for the shape every busy endpoint gets — a JSON object of a
// few fields whose keys and string values are printable ASCII without escapes and whose numbers
// are integers of at most 18 digits ({"model": "gpt-4o", "tokens": 1500}). It reads such a body
// without allocating; for anything else (nested values, escapes, non-ASCII text, fractions,
// exponents, booleans, duplicate keys, more than kMaxFields fields, invalid JSON) parse()
// returns false and the caller uses a full JSON parser, which also words every error.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ratelimit::server {

struct FlatField {
  std::string_view key;
  bool is_string = false;
  std::int64_t integer = 0;  // when !is_string
  std::string_view text;     // the string's characters, or the integer as written
};

class FlatJson {
 public:
  static constexpr std::size_t kMaxFields = 8;

  // True when `text` is such an object (views into `text` stay valid while it does).
  bool parse(std::string_view text);
  const FlatField* find(std::string_view key) const;
  std::size_t size() const { return n_; }
  const FlatField& operator[](std::size_t i) const { return fields_[i]; }

 private:
  std::array<FlatField, kMaxFields> fields_{};
  std::size_t n_ = 0;
};

}  // namespace ratelimit::server
