#include "ratelimit/status.h"

#include <gtest/gtest.h>

#include "ratelimit/decision.h"

namespace ratelimit {
namespace {

TEST(StatusTest, CodesHaveTheirNames) {
  EXPECT_EQ(to_string(ErrorCode::invalid_argument), "invalid_argument");
  EXPECT_EQ(to_string(ErrorCode::not_found), "not_found");
  EXPECT_EQ(to_string(ErrorCode::io_error), "io_error");
  EXPECT_EQ(to_string(ErrorCode::corrupt_state), "corrupt_state");
  EXPECT_EQ(to_string(ErrorCode::unavailable), "unavailable");
  EXPECT_EQ(to_string(ErrorCode::deadline_exceeded), "deadline_exceeded");
  EXPECT_EQ(to_string(ErrorCode::cancelled), "cancelled");
  EXPECT_EQ(to_string(ErrorCode::never_satisfiable), "never_satisfiable");
  EXPECT_EQ(to_string(ErrorCode::closed), "closed");
  EXPECT_EQ(to_string(ErrorCode::internal), "internal");
  EXPECT_EQ(to_string(static_cast<ErrorCode>(99)), "unknown");
}

TEST(StatusTest, ErrorsAreValues) {
  Status ok;
  EXPECT_TRUE(ok);
  Status bad = make_error(ErrorCode::io_error, "ratelimit.persist: disk full");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::io_error);
  EXPECT_EQ(bad.error().to_string(), "io_error: ratelimit.persist: disk full");
  Result<int> value = 7;
  EXPECT_EQ(*value, 7);
}

TEST(DecisionTest, CodesAndReasons) {
  const std::pair<DecisionCode, std::string_view> table[] = {
      {DecisionCode::ok, "within quota"},
      {DecisionCode::unknown_model, "model has no configured quota"},
      {DecisionCode::unlimited, "all limits are unlimited"},
      {DecisionCode::invalid_tokens, "estimated tokens must be non-negative"},
      {DecisionCode::rpd_exceeded, "daily request limit reached"},
      {DecisionCode::rpm_exceeded, "per-minute request limit reached"},
      {DecisionCode::tpm_exceeded, "per-minute token limit reached"},
      {DecisionCode::store_unavailable, "state store unavailable"},
  };
  const char* names[] = {"ok",           "unknown_model", "unlimited",    "invalid_tokens",
                         "rpd_exceeded", "rpm_exceeded",  "tpm_exceeded", "store_unavailable"};
  int i = 0;
  for (const auto& [code, text] : table) {
    EXPECT_EQ(reason(code), text);
    Decision d;
    d.code = code;
    EXPECT_EQ(d.reason(), text);
    EXPECT_EQ(to_string(code), names[i++]);
  }
  EXPECT_EQ(to_string(static_cast<DecisionCode>(99)), "unknown");
  EXPECT_EQ(reason(static_cast<DecisionCode>(99)), "unknown");
}

}  // namespace
}  // namespace ratelimit
