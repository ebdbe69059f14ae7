// The value syntaxes of providers' rate-limit headers: Go durations, decimal durations, HTTP
// dates and counts, at their edges.
#include "providers/http_time.h"

#include <gtest/gtest.h>

#include <optional>

#include "time_format.h"

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kS = kNsPerSecond;

std::int64_t at(const char* rfc3339) { return *parse_rfc3339(rfc3339); }

TEST(GoDuration, AcceptsTheShapesProvidersSend) {
  EXPECT_EQ(parse_go_duration_ns("0"), 0);
  EXPECT_EQ(parse_go_duration_ns("0s"), 0);
  EXPECT_EQ(parse_go_duration_ns("1s"), kS);
  EXPECT_EQ(parse_go_duration_ns("6m0s"), 360 * kS);
  EXPECT_EQ(parse_go_duration_ns("20ms"), 20 * kNsPerMs);
  EXPECT_EQ(parse_go_duration_ns("500ms"), 500 * kNsPerMs);
  EXPECT_EQ(parse_go_duration_ns("1h2m3.5s"), 3723 * kS + kS / 2);
  EXPECT_EQ(parse_go_duration_ns("2m59.56s"), 179 * kS + 560 * kNsPerMs);
  EXPECT_EQ(parse_go_duration_ns("7.66s"), 7 * kS + 660 * kNsPerMs);
  EXPECT_EQ(parse_go_duration_ns(".5s"), kS / 2);
  EXPECT_EQ(parse_go_duration_ns("1.5h"), 5400 * kS);
  EXPECT_EQ(parse_go_duration_ns("0.000000001s"), 1);
  EXPECT_EQ(parse_go_duration_ns("1.0000000009s"), kS);  // below 1 ns: truncated
  EXPECT_EQ(parse_go_duration_ns("3us"), 3'000);
  EXPECT_EQ(parse_go_duration_ns("3\xC2\xB5s"), 3'000);  // µs (micro sign)
  EXPECT_EQ(parse_go_duration_ns("3\xCE\xBCs"), 3'000);  // μs (Greek mu)
  EXPECT_EQ(parse_go_duration_ns("7ns"), 7);
  EXPECT_EQ(parse_go_duration_ns("25h"), kMaxSignalDurationNs);
  EXPECT_EQ(parse_go_duration_ns("24h59m59.999999999s"), kMaxSignalDurationNs - 1);
}

TEST(GoDuration, RejectsGarbageNegativeAndHuge) {
  for (const char* bad : {"",
                          "s",
                          "1",
                          "10",
                          "6m0",
                          "-1s",
                          "+1s",
                          "1 s",
                          " 1s",
                          "1s ",
                          "1.s",
                          "1x",
                          "1S",
                          "1e3s",
                          "abc",
                          "1h-2m",
                          "25h0m0.000000001s",
                          "26h",
                          "1500m1s",
                          "90001s",
                          "999999999999999h",
                          "9999999999999999s",
                          "1..5s",
                          "NaN",
                          "inf"}) {
    EXPECT_EQ(parse_go_duration_ns(bad), std::nullopt) << bad;
  }
}

TEST(DecimalDuration, SecondsAndMilliseconds) {
  EXPECT_EQ(parse_decimal_duration_ns("0", kS), 0);
  EXPECT_EQ(parse_decimal_duration_ns("30", kS), 30 * kS);
  EXPECT_EQ(parse_decimal_duration_ns("1.5", kS), kS + kS / 2);
  EXPECT_EQ(parse_decimal_duration_ns("500", kNsPerMs), 500 * kNsPerMs);
  EXPECT_EQ(parse_decimal_duration_ns("0.25", kNsPerMs), 250'000);
  EXPECT_EQ(parse_decimal_duration_ns("90000", kS), kMaxSignalDurationNs);
  for (const char* bad :
       {"", "-1", "+1", "1e3", "1.", ".", "abc", "1 ", "90001", "90000.5", "9999999999999999"}) {
    EXPECT_EQ(parse_decimal_duration_ns(bad, kS), std::nullopt) << bad;
  }
}

TEST(HttpDate, ThreeFormsOfRfc9110) {
  const std::int64_t t = at("1994-11-06T08:49:37Z");
  EXPECT_EQ(parse_http_date_ns("Sun, 06 Nov 1994 08:49:37 GMT"), t);
  EXPECT_EQ(parse_http_date_ns("Sunday, 06-Nov-94 08:49:37 GMT"), t);
  EXPECT_EQ(parse_http_date_ns("Sun Nov  6 08:49:37 1994"), t);
  EXPECT_EQ(parse_http_date_ns("Sun Nov 16 08:49:37 1994"), at("1994-11-16T08:49:37Z"));
  EXPECT_EQ(parse_http_date_ns("Wednesday, 04-Mar-26 12:00:30 GMT"), at("2026-03-04T12:00:30Z"));
  EXPECT_EQ(parse_http_date_ns("Wed, 04 Mar 2026 12:00:30 GMT"), at("2026-03-04T12:00:30Z"));
  // A leap second is read as :59.
  EXPECT_EQ(parse_http_date_ns("Wed, 31 Dec 2025 23:59:60 GMT"), at("2025-12-31T23:59:59Z"));
}

TEST(HttpDate, RejectsMalformedAndOutOfRange) {
  for (const char* bad : {
           "",
           "Sun, 06 Nov 1994 08:49:37 UTC",     // not GMT
           "Sun, 6 Nov 1994 08:49:37 GMT",      // one-digit day
           "sun, 06 Nov 1994 08:49:37 GMT",     // case-sensitive names
           "Sun, 06 Foo 1994 08:49:37 GMT",     // no such month
           "Sun, 31 Feb 1994 08:49:37 GMT",     // no such day
           "Sun, 06 Nov 1994 24:00:00 GMT",     // hour
           "Sun, 06 Nov 1994 08:60:00 GMT",     // minute
           "Sun, 06 Nov 1994 08:49:61 GMT",     // second
           "Sun, 06 Nov 1969 08:49:37 GMT",     // before 1970
           "Sun, 06 Nov 9999 08:49:37 GMT",     // past the int64 ns range
           "Sun, 06 Nov 1994 08-49-37 GMT",     // separators
           "Sun, 06 Nov 19x4 08:49:37 GMT",     // digits
           "Sun 06 Nov 1994 08:49:37 GMT",      // comma
           "Funday, 06-Nov-94 08:49:37 GMT",    // weekday
           "Sunday, 06-Nov-1994 08:49:37 GMT",  // four-digit year in RFC 850
           "Sunday, 06-Xyz-94 08:49:37 GMT",    // month
           "Sunday 06-Nov-94 08:49:37 GMT",     // comma
           "Sun Nov  x 08:49:37 1994",          // asctime day
           "Sun Nov x6 08:49:37 1994",          // asctime day
           "Sun Xyz  6 08:49:37 1994",          // asctime month
           "Sun Nov  6 08:49:37 199x",          // asctime year
           "Xyz Nov  6 08:49:37 1994",          // asctime weekday
           "30",                                // seconds are not a date
       }) {
    EXPECT_EQ(parse_http_date_ns(bad), std::nullopt) << bad;
  }
}

TEST(Count, NonNegativeIntegersOnly) {
  EXPECT_EQ(parse_count("0"), 0);
  EXPECT_EQ(parse_count("149984"), 149984);
  EXPECT_EQ(parse_count("999999999999999"), 999'999'999'999'999);
  for (const char* bad : {"", "-1", "+1", "1.0", "1e6", "abc", " 1", "1 ", "1000000000000000"}) {
    EXPECT_EQ(parse_count(bad), std::nullopt) << bad;
  }
}

TEST(TrimOws, SpacesAndTabsAtBothEnds) {
  EXPECT_EQ(trim_ows(" \t 6m0s \t"), "6m0s");
  EXPECT_EQ(trim_ows("   "), "");
  EXPECT_EQ(trim_ows("a b"), "a b");
}

}  // namespace
}  // namespace ratelimit::detail
