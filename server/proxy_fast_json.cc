#include "proxy_fast_json.h"

namespace ratelimit::server::proxy {
namespace {

// --- a fast reader for the common case, without building a JSON tree ---
//
// classify() and usage_of() run on every proxied call, and nlohmann/json costs about 100
// instructions per byte (a tree of allocations). The reader below checks the JSON text as
// strictly as nlohmann does (grammar, escapes, surrogate pairs, UTF-8) and allocates nothing.
// Whenever its answer could differ from the full parser's (a key written with escapes, a key
// it looks for given twice, an integer of more than 18 digits or a fraction where it needs an
// integer, a byte order mark, nesting deeper than kMaxDepth, invalid JSON) it declines, and the
// caller uses nlohmann, which also words every error.
class Scan {
 public:
  explicit Scan(std::string_view text) : p_(text.data()), e_(text.data() + text.size()) {}

  void ws() {
    while (p_ < e_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool at_end() {
    ws();
    return p_ == e_;
  }
  bool peek(char c) {
    ws();
    return p_ < e_ && *p_ == c;
  }
  // A string at p_ (its quote); `raw` gets its text between the quotes, `escaped` whether it
  // has escapes, `bytes` (when not null) grows by its length once decoded (UTF-8).
  bool string(std::string_view* raw, bool* escaped, std::int64_t* bytes) {
    if (p_ >= e_ || *p_ != '"') return false;
    const char* start = ++p_;
    bool esc = false;
    std::int64_t n = 0;
    while (p_ < e_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') break;
      if (c < 0x20) return false;
      if (c == '\\') {
        esc = true;
        if (++p_ >= e_) return false;
        const char k = *p_++;
        if (k == 'u') {
          unsigned cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a lone low surrogate
          if (cp >= 0xD800 && cp <= 0xDBFF) {              // must pair with a low one
            unsigned low;
            if (e_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
            n += 4;
          } else {
            n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
          }
        } else if (k == '"' || k == '\\' || k == '/' || k == 'b' || k == 'f' || k == 'n' ||
                   k == 'r' || k == 't') {
          ++n;
        } else {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        ++p_;
        ++n;
        continue;
      }
      const int len = utf8(c);
      if (len == 0) return false;
      n += len;
    }
    if (p_ >= e_) return false;
    if (raw) *raw = std::string_view(start, static_cast<std::size_t>(p_ - start));
    if (escaped) *escaped = esc;
    if (bytes) *bytes += n;
    ++p_;
    return true;
  }
  // A number at p_. `integer`: set when it is -?digits (at most 18) with neither fraction nor
  // exponent; `big` when it is such an integer with more digits (the caller declines).
  bool number(std::optional<std::int64_t>* integer, bool* big) {
    const bool negative = p_ < e_ && *p_ == '-';
    if (negative) ++p_;
    if (p_ >= e_ || *p_ < '0' || *p_ > '9') return false;
    const char* digits = p_;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < e_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    const std::size_t count = static_cast<std::size_t>(p_ - digits);
    bool whole = true;
    if (p_ < e_ && *p_ == '.') {
      whole = false;
      ++p_;
      if (p_ >= e_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ < e_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < e_ && (*p_ == 'e' || *p_ == 'E')) {
      whole = false;
      ++p_;
      if (p_ < e_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= e_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ < e_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (whole && count > 18) {
      if (big) *big = true;
    } else if (whole && integer) {
      std::int64_t v = 0;
      for (const char* d = digits; d < digits + count; ++d) v = v * 10 + (*d - '0');
      *integer = negative ? -v : v;
    }
    return true;
  }
  // Any value; `bytes` (when not null) grows by the decoded length of every string value in
  // it (object keys are not counted).
  bool value(std::int64_t* bytes, int depth = 0) {
    ws();
    if (p_ >= e_) return false;
    switch (*p_) {
      case '"':
        return string(nullptr, nullptr, bytes);
      case '{':
      case '[': {
        if (depth >= kMaxDepth) return false;
        const bool object = *p_ == '{';
        const char close = object ? '}' : ']';
        ++p_;
        if (peek(close)) {
          ++p_;
          return true;
        }
        for (;;) {
          if (object) {
            ws();
            if (!string(nullptr, nullptr, nullptr)) return false;
            if (!peek(':')) return false;
            ++p_;
          }
          if (!value(bytes, depth + 1)) return false;
          ws();
          if (p_ < e_ && *p_ == ',') {
            ++p_;
            continue;
          }
          if (p_ < e_ && *p_ == close) {
            ++p_;
            return true;
          }
          return false;
        }
      }
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number(nullptr, nullptr);
    }
  }
  // The members of the object at p_: `member(key, scan)` is called with the scan at the value,
  // which it must read (value() or a reading of its own); false from it stops with false.
  // Declines keys written with escapes.
  template <class F>
  bool object(F&& member) {
    if (!peek('{')) return false;
    ++p_;
    if (peek('}')) {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      std::string_view key;
      bool escaped = false;
      if (!string(&key, &escaped, nullptr) || escaped) return false;
      if (!peek(':')) return false;
      ++p_;
      ws();
      if (!member(key)) return false;
      ws();
      if (p_ < e_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ < e_ && *p_ == '}') {
        ++p_;
        return true;
      }
      return false;
    }
  }
  char next() {
    ws();
    return p_ < e_ ? *p_ : '\0';
  }

  static constexpr int kMaxDepth = 256;

 private:
  bool hex4(unsigned& out) {
    if (e_ - p_ < 4) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = *p_++;
      out <<= 4;
      if (h >= '0' && h <= '9') {
        out |= static_cast<unsigned>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        out |= static_cast<unsigned>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        out |= static_cast<unsigned>(h - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  // One UTF-8 sequence at p_ starting with `c` (>= 0x80), as RFC 3629 allows it (no overlong
  // forms, no surrogates, nothing above U+10FFFF): its length, or 0.
  int utf8(unsigned char c) {
    auto cont = [&](std::ptrdiff_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
      if (p_ + i >= e_) return false;
      const auto b = static_cast<unsigned char>(p_[i]);
      return b >= lo && b <= hi;
    };
    int len = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = cont(1) ? 2 : 0;
    } else if (c == 0xE0) {
      len = cont(1, 0xA0) && cont(2) ? 3 : 0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      len = cont(1) && cont(2) ? 3 : 0;
    } else if (c == 0xED) {
      len = cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    } else if (c == 0xF0) {
      len = cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = cont(1) && cont(2) && cont(3) ? 4 : 0;
    } else if (c == 0xF4) {
      len = cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    }
    p_ += len;
    return len;
  }
  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(e_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  const char* p_;
  const char* e_;
};

// An integer member as int_at() reads it: `out` is set for an integer; a fraction or anything
// else leaves it unset. False (decline) for a second occurrence or a too long integer.
bool integer_member(Scan& s, std::optional<std::int64_t>& out, bool& seen) {
  if (seen) return false;
  seen = true;
  if (const char c = s.next(); c != '-' && (c < '0' || c > '9')) return s.value(nullptr);
  bool big = false;
  return s.number(&out, &big) && !big;
}

}  // namespace

std::optional<RequestFields> fast_request(UpstreamApi api, std::string_view body) {
  RequestFields f;
  Scan s(body);
  unsigned seen = 0;  // one bit per key read, to decline duplicates
  auto once = [&](unsigned bit) {
    if (seen & bit) return false;
    seen |= bit;
    return true;
  };
  std::optional<std::int64_t> max_by_key[3];
  bool max_seen[3] = {false, false, false};
  const bool ok = s.object([&](std::string_view key) {
    if (api == UpstreamApi::gemini) {
      if (key == "contents" || key == "systemInstruction" || key == "tools") {
        const unsigned bit = key == "contents" ? 1u : key == "tools" ? 2u : 4u;
        return once(bit) && s.value(&f.input);
      }
      if (key == "generationConfig") {
        if (!once(8)) return false;
        if (s.next() != '{') return s.value(nullptr);
        return s.object([&](std::string_view k) {
          if (k == "maxOutputTokens") return integer_member(s, max_by_key[0], max_seen[0]);
          return s.value(nullptr);
        });
      }
      return s.value(nullptr);
    }
    static constexpr std::string_view kCounted[] = {"messages", "system",       "input",
                                                    "prompt",   "instructions", "tools"};
    for (unsigned i = 0; i < std::size(kCounted); ++i) {
      if (key == kCounted[i]) return once(1u << i) && s.value(&f.input);
    }
    static constexpr std::string_view kMax[] = {"max_tokens", "max_completion_tokens",
                                                "max_output_tokens"};
    for (unsigned i = 0; i < std::size(kMax); ++i) {
      if (key == kMax[i]) return integer_member(s, max_by_key[i], max_seen[i]);
    }
    if (key == "model") {
      if (!once(1u << 10)) return false;
      bool escaped = false;
      if (s.next() != '"') return false;  // not a string: the full parser words the error
      if (!s.string(&f.model, &escaped, nullptr) || escaped) return false;
      f.has_model = true;
      return true;
    }
    if (key == "stream") {
      if (!once(1u << 11)) return false;
      f.stream = s.next() == 't';
      return s.value(nullptr);
    }
    if (key == "stream_options") return false;  // rare: the full parser reads it
    return s.value(nullptr);
  });
  if (!ok || !s.at_end()) return std::nullopt;
  for (auto& m : max_by_key) {
    if (!f.max_out) f.max_out = m;
  }
  return f;
}

// usage_of() by the fast reader; the outer nullopt: decline.
std::optional<std::optional<Usage>> fast_usage(UpstreamApi api, std::string_view body) {
  Scan s(body);
  if (s.next() != '{') return std::nullopt;
  const std::string_view name = api == UpstreamApi::gemini ? "usageMetadata" : "usage";
  // gemini: promptTokenCount, candidatesTokenCount, thoughtsTokenCount; anthropic:
  // input_tokens, cache_creation_input_tokens, output_tokens; openai: prompt_tokens,
  // completion_tokens, input_tokens, output_tokens.
  std::string_view keys[4];
  if (api == UpstreamApi::gemini) {
    keys[0] = "promptTokenCount", keys[1] = "candidatesTokenCount", keys[2] = "thoughtsTokenCount";
  } else if (api == UpstreamApi::anthropic) {
    keys[0] = "input_tokens", keys[1] = "cache_creation_input_tokens", keys[2] = "output_tokens";
  } else {
    keys[0] = "prompt_tokens", keys[1] = "completion_tokens", keys[2] = "input_tokens",
    keys[3] = "output_tokens";
  }
  std::optional<std::int64_t> v[4];
  bool v_seen[4] = {false, false, false, false};
  bool seen = false, is_object = false;
  const bool ok = s.object([&](std::string_view key) {
    if (key != name) return s.value(nullptr);
    if (seen) return false;
    seen = true;
    if (s.next() != '{') return s.value(nullptr);
    is_object = true;
    return s.object([&](std::string_view k) {
      for (int i = 0; i < 4; ++i) {
        if (!keys[i].empty() && k == keys[i]) return integer_member(s, v[i], v_seen[i]);
      }
      return s.value(nullptr);
    });
  });
  if (!ok || !s.at_end()) return std::nullopt;
  if (!is_object) return std::optional<Usage>{};
  Usage u;
  if (api == UpstreamApi::gemini) {
    u.input = v[0].value_or(0);
    u.output = v[1].value_or(0) + v[2].value_or(0);
  } else if (api == UpstreamApi::anthropic) {
    u.input = v[0].value_or(0) + v[1].value_or(0);
    u.output = v[2].value_or(0);
  } else if (v[0]) {  // chat, completions, embeddings
    u.input = *v[0];
    u.output = v[1].value_or(0);
  } else if (v[2]) {  // responses
    u.input = *v[2];
    u.output = v[3].value_or(0);
  } else {
    return std::optional<Usage>{};
  }
  return std::optional<Usage>{u};
}

}  // namespace ratelimit::server::proxy
