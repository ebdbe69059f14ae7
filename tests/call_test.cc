// call_with_limits (ratelimit/call.h): acquire → call → commit → observe → retry on a 429, on a
// ManualClock (a wait for a provider's retry-after advances it instead of sleeping).
#include "ratelimit/call.h"

#include <stdexcept>

#include "gtest/gtest.h"
#include "ratelimit/ratelimit.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>(testing::start_time());
  std::unique_ptr<RateLimiter> limiter;
  explicit Fixture(ModelQuota q = {.max_rpm = 100, .max_tpm = 100'000}) {
    Config c;
    c.backend = Backend::memory;
    c.providers = {};
    c.quotas = {{"gpt-4o", q}};
    c.clock = clock;
    limiter = std::move(*RateLimiter::open(std::move(c)));
  }
  ModelStats stats() { return *limiter->stats("gpt-4o"); }
};

CallResponse ok_with_usage() {
  CallResponse r;
  r.usage = TokenEstimate{120, 30};
  return r;
}

CallResponse too_many(const char* retry_after) {
  CallResponse r;
  r.status = 429;
  r.headers = {{"retry-after", retry_after}};
  return r;
}

TEST(CallWithLimits, CommitsTheReportedUsage) {
  Fixture f;
  auto r = call_with_limits(*f.limiter, "gpt-4o", {1000, 500}, ok_with_usage);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(f.stats().rpm, 1);
  EXPECT_EQ(f.stats().tpm, 150);
}

TEST(CallWithLimits, KeepsTheEstimateWhenASuccessReportsNoUsage) {
  Fixture f;
  auto r = call_with_limits(*f.limiter, "gpt-4o", {1000, 500}, [] { return CallResponse{}; });
  ASSERT_TRUE(r);
  EXPECT_EQ(f.stats().tpm, 1500);
}

TEST(CallWithLimits, RetriesA429AfterItsHint) {
  Fixture f;
  int calls = 0;
  const TimePoint t0 = f.clock->now();
  auto r = call_with_limits(*f.limiter, "gpt-4o", {1000, 500},
                            [&] { return ++calls == 1 ? too_many("20") : ok_with_usage(); });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(calls, 2);
  EXPECT_GE(f.clock->now() - t0, 20s);  // waited out the provider's retry-after
  EXPECT_EQ(f.stats().rpm, 2);          // the 429 counts as a request, without tokens
  EXPECT_EQ(f.stats().tpm, 150);
}

TEST(CallWithLimits, ReturnsTheLast429WhenTheRetriesAreSpent) {
  Fixture f;
  int calls = 0;
  CallOptions o;
  o.max_429_retries = 1;
  auto r = call_with_limits(
      *f.limiter, "gpt-4o", {1000, 500},
      [&] {
        ++calls;
        return too_many("1");
      },
      o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(f.stats().tpm, 0);
}

TEST(CallWithLimits, AThrowingCallIsCancelled) {
  Fixture f;
  EXPECT_THROW(call_with_limits(*f.limiter, "gpt-4o", {1000, 500},
                                []() -> CallResponse { throw std::runtime_error("network"); }),
               std::runtime_error);
  EXPECT_EQ(f.stats().rpm, 0);
}

TEST(CallWithLimits, GivesTheAcquireErrorWithoutCalling) {
  Fixture f({.max_rpm = 1, .max_tpm = 0});
  ASSERT_TRUE(call_with_limits(*f.limiter, "gpt-4o", {1, 1}, ok_with_usage));
  CallOptions o;
  o.wait.timeout = Duration(0);
  bool called = false;
  auto r = call_with_limits(
      *f.limiter, "gpt-4o", {1, 1},
      [&] {
        called = true;
        return ok_with_usage();
      },
      o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::deadline_exceeded);
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace ratelimit
