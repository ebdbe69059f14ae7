// Pacific calendar days (Gemini's daily reset) at their edges: midnight itself, the 23 h day in
// March and the 25 h day in November, the built-in rules against the time-zone database.
#include "core/calendar.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "time_format.h"

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kHour = 3'600'000'000'000;

std::int64_t at(const char* rfc3339) { return *parse_rfc3339(rfc3339); }

TEST(Calendar, TheDatabaseHasLosAngeles) { EXPECT_TRUE(pacific_zone_from_tzdb()); }

TEST(Calendar, AnOrdinaryWinterAndSummerDay) {
  // 2026-01-14 23:59:59 PST
  EXPECT_EQ(pacific_day_start_ns(at("2026-01-15T07:59:59Z")), at("2026-01-14T08:00:00Z"));
  EXPECT_EQ(next_pacific_midnight_ns(at("2026-01-15T07:59:59Z")), at("2026-01-15T08:00:00Z"));
  // 2026-07-04 12:00 PDT
  EXPECT_EQ(pacific_day_start_ns(at("2026-07-04T19:00:00Z")), at("2026-07-04T07:00:00Z"));
  EXPECT_EQ(next_pacific_midnight_ns(at("2026-07-04T19:00:00Z")), at("2026-07-05T07:00:00Z"));
}

TEST(Calendar, MidnightItselfStartsADay) {
  const std::int64_t midnight = at("2026-01-15T08:00:00Z");
  EXPECT_EQ(pacific_day_start_ns(midnight), midnight);
  EXPECT_EQ(next_pacific_midnight_ns(midnight), midnight + 24 * kHour);
  EXPECT_EQ(pacific_day_start_ns(midnight - 1), midnight - 24 * kHour);
  EXPECT_EQ(next_pacific_midnight_ns(midnight - 1), midnight);
}

TEST(Calendar, MarchHasA23HourDay) {
  // 2026-03-08: clocks go from 02:00 PST to 03:00 PDT (10:00 UTC).
  const std::int64_t start = at("2026-03-08T08:00:00Z");
  const std::int64_t next = at("2026-03-09T07:00:00Z");
  EXPECT_EQ(next - start, 23 * kHour);
  for (const char* t : {"2026-03-08T08:00:00Z", "2026-03-08T09:59:59.999999999Z",
                        "2026-03-08T10:00:00Z", "2026-03-09T06:59:59.999999999Z"}) {
    EXPECT_EQ(pacific_day_start_ns(at(t)), start) << t;
    EXPECT_EQ(next_pacific_midnight_ns(at(t)), next) << t;
  }
  EXPECT_EQ(pacific_day_start_ns(next), next);
  EXPECT_EQ(next_pacific_midnight_ns(next), at("2026-03-10T07:00:00Z"));
  EXPECT_EQ(next_pacific_midnight_ns(start - 1), start);
}

TEST(Calendar, NovemberHasA25HourDay) {
  // 2026-11-01: clocks go from 02:00 PDT back to 01:00 PST (09:00 UTC); 01:xx happens twice.
  const std::int64_t start = at("2026-11-01T07:00:00Z");
  const std::int64_t next = at("2026-11-02T08:00:00Z");
  EXPECT_EQ(next - start, 25 * kHour);
  for (const char* t : {"2026-11-01T07:00:00Z", "2026-11-01T08:30:00Z" /* 01:30 PDT */,
                        "2026-11-01T09:30:00Z" /* 01:30 PST */, "2026-11-02T07:59:59Z"}) {
    EXPECT_EQ(pacific_day_start_ns(at(t)), start) << t;
    EXPECT_EQ(next_pacific_midnight_ns(at(t)), next) << t;
  }
  EXPECT_EQ(next_pacific_midnight_ns(next), at("2026-11-03T08:00:00Z"));
}

TEST(Calendar, BeforeTheEpoch) {
  EXPECT_EQ(pacific_day_start_ns(-1), at("1969-12-31T08:00:00Z"));
  EXPECT_EQ(next_pacific_midnight_ns(-1), at("1970-01-01T08:00:00Z"));
  EXPECT_EQ(pacific_day_start_ns_by_rules(-1), at("1969-12-31T08:00:00Z"));
  EXPECT_EQ(next_pacific_midnight_ns_by_rules(-1), at("1970-01-01T08:00:00Z"));
}

TEST(Calendar, TheBuiltInRulesMatchTheDatabaseSince2007) {
  const std::int64_t from = at("2007-01-01T00:00:00Z");
  const std::int64_t to = at("2037-12-31T00:00:00Z");
  const std::int64_t step = 7 * kHour + 13 * 60'000'000'000 + 17;  // drifts across the day
  for (std::int64_t t = from; t < to; t += step) {
    ASSERT_EQ(pacific_day_start_ns_by_rules(t), pacific_day_start_ns(t)) << format_rfc3339(t);
    ASSERT_EQ(next_pacific_midnight_ns_by_rules(t), next_pacific_midnight_ns(t))
        << format_rfc3339(t);
  }
  // Exactly at and around each change.
  for (const char* change : {"2025-03-09T10:00:00Z", "2025-11-02T09:00:00Z", "2026-03-08T10:00:00Z",
                             "2026-11-01T09:00:00Z"}) {
    for (std::int64_t d : {-1LL, 0LL, 1LL}) {
      const std::int64_t t = at(change) + d;
      EXPECT_EQ(pacific_day_start_ns_by_rules(t), pacific_day_start_ns(t)) << change << d;
      EXPECT_EQ(next_pacific_midnight_ns_by_rules(t), next_pacific_midnight_ns(t)) << change << d;
    }
  }
}

TEST(Calendar, ThreadSafe) {
  std::vector<std::thread> threads;
  std::vector<std::int64_t> results(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&results, i] {
      std::int64_t sum = 0;
      for (int k = 0; k < 200; ++k) {
        sum += next_pacific_midnight_ns(at("2026-11-01T08:30:00Z") + k * kHour) / kHour;
      }
      results[static_cast<std::size_t>(i)] = sum;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 1; i < 4; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)], results[0]);
}

}  // namespace
}  // namespace ratelimit::detail
