#include "time_format.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kNs = 1'000'000'000;
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
// 2026-02-19T10:00:00Z
constexpr std::int64_t kFeb19 = 1'771'495'200 * kNs;

struct FormatCase {
  std::int64_t unix_ns;
  std::string_view text;
};

TEST(FormatRfc3339, MatchesGoRfc3339Nano) {
  const FormatCase cases[] = {
      {0, "1970-01-01T00:00:00Z"},
      {1, "1970-01-01T00:00:00.000000001Z"},
      {100, "1970-01-01T00:00:00.0000001Z"},
      {kNs / 2, "1970-01-01T00:00:00.5Z"},
      {kNs + 120'000'000, "1970-01-01T00:00:01.12Z"},
      {-1, "1969-12-31T23:59:59.999999999Z"},
      {-kNs, "1969-12-31T23:59:59Z"},
      {-kNs / 2, "1969-12-31T23:59:59.5Z"},
      {-86'400 * kNs, "1969-12-31T00:00:00Z"},
      {kFeb19, "2026-02-19T10:00:00Z"},
      {kFeb19 + 123'456'789, "2026-02-19T10:00:00.123456789Z"},
      {kFeb19 - 3600 * kNs, "2026-02-19T09:00:00Z"},
      {951'782'400 * kNs, "2000-02-29T00:00:00Z"},
      {kMax, "2262-04-11T23:47:16.854775807Z"},
      {kMin, "1677-09-21T00:12:43.145224192Z"},
  };
  for (const FormatCase& c : cases) {
    EXPECT_EQ(format_rfc3339(c.unix_ns), c.text) << c.unix_ns;
    EXPECT_EQ(parse_rfc3339(c.text), c.unix_ns) << c.text;
  }
}

TEST(ParseRfc3339, AcceptsOffsets) {
  // +02:00 is two hours ahead of UTC: 12:00 there is 10:00 UTC.
  EXPECT_EQ(parse_rfc3339("2026-02-19T12:00:00+02:00"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19T12:00:00.5+02:00"), kFeb19 + kNs / 2);
  EXPECT_EQ(parse_rfc3339("2026-02-19T04:30:00-05:30"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00+00:00"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00-00:00"), kFeb19);
  // The offset moves the date across midnight, month and year ends.
  EXPECT_EQ(parse_rfc3339("2026-02-20T09:00:00+23:00"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2025-12-31T23:00:00-01:00"), parse_rfc3339("2026-01-01T00:00:00Z"));
  EXPECT_EQ(parse_rfc3339("2026-03-01T00:59:59.999+01:00"),
            parse_rfc3339("2026-02-28T23:59:59.999Z"));
}

TEST(ParseRfc3339, AcceptsYamlSpellings) {
  EXPECT_EQ(parse_rfc3339("2026-02-19t10:00:00z"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19 10:00:00Z"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19 12:00:00+02:00"), kFeb19);
}

TEST(ParseRfc3339, FractionDigits) {
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00.1Z"), kFeb19 + 100'000'000);
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00.000000001Z"), kFeb19 + 1);
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00.000000000Z"), kFeb19);
  EXPECT_EQ(parse_rfc3339("2026-02-19T10:00:00.10Z"), kFeb19 + 100'000'000);
  EXPECT_EQ(parse_rfc3339("1969-12-31T23:59:59.9Z"), -100'000'000);
}

TEST(ParseRfc3339, CalendarBoundaries) {
  EXPECT_TRUE(parse_rfc3339("2024-02-29T00:00:00Z"));   // leap year
  EXPECT_TRUE(parse_rfc3339("2000-02-29T00:00:00Z"));   // divisible by 400
  EXPECT_FALSE(parse_rfc3339("2100-02-29T00:00:00Z"));  // divisible by 100 only
  EXPECT_FALSE(parse_rfc3339("2026-02-29T00:00:00Z"));
  EXPECT_TRUE(parse_rfc3339("2026-12-31T23:59:59.999999999Z"));
  EXPECT_FALSE(parse_rfc3339("2026-04-31T00:00:00Z"));
  EXPECT_EQ(*parse_rfc3339("2026-01-01T00:00:00Z") - *parse_rfc3339("2025-12-31T23:59:59Z"), kNs);
}

TEST(ParseRfc3339, Int64Range) {
  EXPECT_EQ(parse_rfc3339("2262-04-11T23:47:16.854775807Z"), kMax);
  EXPECT_EQ(parse_rfc3339("2262-04-12T01:47:16.854775807+02:00"), kMax);
  EXPECT_EQ(parse_rfc3339("1677-09-21T00:12:43.145224192Z"), kMin);
  EXPECT_EQ(parse_rfc3339("1677-09-20T23:12:43.145224192-01:00"), kMin);
  EXPECT_EQ(parse_rfc3339("2262-04-11T23:47:16.854775808Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("2262-04-11T23:47:17Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("1677-09-21T00:12:43.145224191Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("1677-09-21T00:12:43Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("9999-12-31T23:59:59Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339("0000-01-01T00:00:00Z"), std::nullopt);
  EXPECT_EQ(parse_rfc3339(kGoZeroTime), std::nullopt);
}

TEST(ParseRfc3339, RejectsMalformed) {
  const std::string_view cases[] = {
      "",
      "2026",
      "2026-02-19",
      "2026-02-19T10:00:00",    // no zone
      "2026-02-19T10:00Z",      // no seconds
      "2026-2-19T10:00:00Z",    // one-digit month
      "2026-02-9T10:00:00Z",    // one-digit day
      "2026-02-19T1:00:00Z",    // one-digit hour
      "26-02-19T10:00:00Z",     // two-digit year
      "+2026-02-19T10:00:00Z",  // signed year
      "12026-02-19T10:00:00Z",  // five-digit year
      "2026/02/19T10:00:00Z",   // wrong separators
      "2026-02-19T10.00.00Z",
      "2026-02-19X10:00:00Z",  // wrong date/time separator
      "2026-02-19\t10:00:00Z",
      "2026-02-19  10:00:00Z",
      "2026-00-19T10:00:00Z",  // month 0
      "2026-13-19T10:00:00Z",  // month 13
      "2026-02-00T10:00:00Z",  // day 0
      "2026-01-32T10:00:00Z",  // day 32
      "2026-02-30T10:00:00Z",  // February 30
      "2026-02-19T24:00:00Z",  // hour 24
      "2026-02-19T10:60:00Z",  // minute 60
      "2026-02-19T10:00:60Z",  // leap second
      "2026-02-19T10:00:61Z",
      "2026-02-19T10:00:00.Z",            // empty fraction
      "2026-02-19T10:00:00.1234567890Z",  // ten fraction digits
      "2026-02-19T10:00:00,5Z",           // comma fraction
      "2026-02-19T10:00:00.5",            // fraction, no zone
      "2026-02-19T10:00:00+02",           // short offset
      "2026-02-19T10:00:00+0200",         // offset without colon
      "2026-02-19T10:00:00+2:00",
      "2026-02-19T10:00:00+24:00",  // offset hour 24
      "2026-02-19T10:00:00+02:60",  // offset minute 60
      "2026-02-19T10:00:00 Z",      // space before zone
      "2026-02-19T10:00:00UTC",
      "2026-02-19T10:00:00ZZ",  // trailing garbage
      "2026-02-19T10:00:00Z ",  // trailing space
      " 2026-02-19T10:00:00Z",  // leading space
      "2026-02-19T10:00:00+02:00Z",
      "2026-02-1a T10:00:00Z",
      "2026-02-19T10:0a:00Z",
      "2026-02-19T10:00:00.5a Z",
      "2026-02-19T10:00:00.-5Z",
      "２０２６-02-19T10:00:00Z",  // non-ASCII digits
      "not a timestamp",
  };
  for (const std::string_view text : cases) {
    EXPECT_EQ(parse_rfc3339(text), std::nullopt) << "\"" << text << "\"";
    EXPECT_FALSE(is_go_zero_time(text)) << "\"" << text << "\"";
  }
  // Embedded NUL: the view's length counts, not a C string's.
  EXPECT_EQ(parse_rfc3339(std::string_view("2026-02-19T10:00:00Z\0", 21)), std::nullopt);
  EXPECT_EQ(parse_rfc3339(std::string_view("2026-02-19T10:00:00Z", 19)), std::nullopt);
}

TEST(GoZeroTime, Recognised) {
  EXPECT_EQ(kGoZeroTime, "0001-01-01T00:00:00Z");
  EXPECT_TRUE(is_go_zero_time(kGoZeroTime));
  EXPECT_TRUE(is_go_zero_time("0001-01-01T00:00:00.000Z"));
  EXPECT_TRUE(is_go_zero_time("0001-01-01t00:00:00z"));
  EXPECT_TRUE(is_go_zero_time("0001-01-01 00:00:00Z"));
  EXPECT_TRUE(is_go_zero_time("0001-01-01T02:00:00+02:00"));
  EXPECT_TRUE(is_go_zero_time("0000-12-31T23:00:00-01:00"));
  EXPECT_FALSE(is_go_zero_time("0001-01-01T00:00:00.000000001Z"));
  EXPECT_FALSE(is_go_zero_time("0001-01-01T00:00:01Z"));
  EXPECT_FALSE(is_go_zero_time("0001-01-01T00:00:00+01:00"));
  EXPECT_FALSE(is_go_zero_time("0001-01-02T00:00:00Z"));
  EXPECT_FALSE(is_go_zero_time("1970-01-01T00:00:00Z"));
  EXPECT_FALSE(is_go_zero_time("0001-01-01"));
  EXPECT_FALSE(is_go_zero_time(""));
}

TEST(Rfc3339, RandomRoundTrip) {
  std::mt19937_64 random(20260219);
  std::uniform_int_distribution<std::int64_t> any(kMin, kMax);
  for (int i = 0; i < 100'000; ++i) {
    std::int64_t ns = any(random);
    if (i % 3 == 1) ns -= ns % kNs;        // whole seconds: no fraction
    if (i % 3 == 2) ns -= ns % 1'000'000;  // milliseconds: trimmed fraction
    const std::string text = format_rfc3339(ns);
    ASSERT_EQ(parse_rfc3339(text), ns) << text;
    ASSERT_EQ(text.back(), 'Z');
    if (ns % kNs == 0) {
      ASSERT_EQ(text.size(), 20u) << text;
    } else {
      ASSERT_NE(text[text.size() - 2], '0') << text;
    }
  }
}

TEST(Rfc3339, FormatIsMonotonicAcrossDays) {
  // Every second around several day, month and year boundaries parses back in order.
  const std::int64_t starts[] = {-kNs * 86'400, 0, kFeb19, *parse_rfc3339("2024-02-28T23:59:00Z"),
                                 *parse_rfc3339("1999-12-31T23:59:00Z")};
  for (const std::int64_t start : starts) {
    std::int64_t previous = start - kNs;
    for (std::int64_t s = 0; s < 180; ++s) {
      const std::int64_t ns = start + s * kNs + 7;
      const std::optional<std::int64_t> parsed = parse_rfc3339(format_rfc3339(ns));
      ASSERT_EQ(parsed, ns) << format_rfc3339(ns);
      ASSERT_GT(*parsed, previous);
      previous = *parsed;
    }
  }
}

}  // namespace
}  // namespace ratelimit::detail
