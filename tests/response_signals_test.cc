// Provider responses read into cooldowns and budgets: header fixtures shaped like each
// provider's real responses, at the edges (0, -1, 6m0s, 1h2m3.5s, 500ms, fractional seconds,
// HTTP dates, RFC 3339 with offsets, missing, repeated and garbage values), and Gemini's 429
// bodies, the per-day one across both daylight saving time changes.
#include "providers/response_signals.h"

#include <gtest/gtest.h>

#include <string>

#include "core/calendar.h"
#include "providers/http_time.h"
#include "time_format.h"

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kS = kNsPerSecond;
constexpr std::int64_t kMs = kNsPerMs;

std::int64_t at(const char* rfc3339) { return *parse_rfc3339(rfc3339); }

const std::int64_t kNow = at("2026-03-01T12:00:00Z");

using Headers = std::vector<std::pair<std::string, std::string>>;

ProviderResponse response(int status, Headers headers, std::string body = "",
                          ResponseFormat format = ResponseFormat::auto_detect) {
  ProviderResponse r;
  r.format = format;
  r.status = status;
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

const Budget* find(const ResponseSignals& s, BudgetKind kind,
                   BudgetPeriod period = BudgetPeriod::minute) {
  for (const auto& b : s.budgets) {
    if (b.kind == kind && b.period == period) return &b;
  }
  return nullptr;
}

std::string problems(const ResponseSignals& s) {
  std::string out;
  for (const auto& p : s.problems) out += p + "\n";
  return out;
}

// --- OpenAI --------------------------------------------------------------------------------

const Headers kOpenAiOk = {
    {"x-ratelimit-limit-requests", "60"},     {"x-ratelimit-limit-tokens", "150000"},
    {"x-ratelimit-remaining-requests", "59"}, {"x-ratelimit-remaining-tokens", "149984"},
    {"x-ratelimit-reset-requests", "1s"},     {"x-ratelimit-reset-tokens", "6m0s"},
    {"openai-processing-ms", "320"},          {"x-request-id", "req_abc"},
};

TEST(OpenAi, ReadsBothBudgets) {
  const auto s = read_response(response(200, kOpenAiOk), kNow);
  EXPECT_EQ(s.format, ResponseFormat::openai);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
  EXPECT_FALSE(s.blocked_until_ns);
  ASSERT_EQ(s.budgets.size(), 2u);
  const Budget* r = find(s, BudgetKind::requests);
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(r->per_day);
  EXPECT_EQ(r->limit, 60);
  EXPECT_EQ(r->remaining, 59);
  EXPECT_EQ(r->reset_at_ns, kNow + kS);
  const Budget* t = find(s, BudgetKind::tokens);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->limit, 150000);
  EXPECT_EQ(t->remaining, 149984);
  EXPECT_EQ(t->reset_at_ns, kNow + 360 * kS);
}

TEST(OpenAi, NamesAreCaseInsensitiveAndValuesTrimmed) {
  const auto s = read_response(response(200, {{"X-RateLimit-Remaining-Requests", " 7\t"},
                                              {"X-RATELIMIT-RESET-REQUESTS", "500ms"}}),
                               kNow);
  EXPECT_EQ(s.format, ResponseFormat::openai);
  const Budget* r = find(s, BudgetKind::requests);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->remaining, 7);
  EXPECT_FALSE(r->limit);
  EXPECT_EQ(r->reset_at_ns, kNow + 500 * kMs);
  EXPECT_EQ(find(s, BudgetKind::tokens), nullptr);  // no token header at all
}

TEST(OpenAi, ExhaustedBudgetWithResetIsACooldownEvenWithout429) {
  const auto s = read_response(response(200, {{"x-ratelimit-remaining-tokens", "0"},
                                              {"x-ratelimit-reset-tokens", "1h2m3.5s"}}),
                               kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + 3723 * kS + kS / 2);
}

TEST(OpenAi, ZeroRemainingWithoutResetIsNoCooldown) {
  const auto s = read_response(response(200, {{"x-ratelimit-remaining-tokens", "0"}}), kNow);
  EXPECT_FALSE(s.blocked_until_ns);
  EXPECT_EQ(find(s, BudgetKind::tokens)->remaining, 0);
}

TEST(OpenAi, A429UsesTheLaterOfRetryAfterAndExhaustedResets) {
  const auto s = read_response(response(429, {{"x-ratelimit-remaining-requests", "0"},
                                              {"x-ratelimit-reset-requests", "20ms"},
                                              {"retry-after", "2"}}),
                               kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + 2 * kS);
  const auto later = read_response(response(429, {{"x-ratelimit-remaining-requests", "0"},
                                                  {"x-ratelimit-reset-requests", "6m0s"},
                                                  {"retry-after", "2"}}),
                                   kNow);
  EXPECT_EQ(later.blocked_until_ns, kNow + 360 * kS);
}

TEST(OpenAi, RetryAfterMsWinsOverRetryAfter) {
  const auto s =
      read_response(response(429, {{"retry-after-ms", "1500.5"}, {"retry-after", "9"}}), kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + 1500 * kMs + 500'000);
  EXPECT_EQ(s.format, ResponseFormat::auto_detect);  // no rate-limit header: nothing detected
}

TEST(OpenAi, RetryAfterAsAnHttpDate) {
  const auto s =
      read_response(response(429, {{"Retry-After", "Sun, 01 Mar 2026 12:00:30 GMT"}}), kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + 30 * kS);
  // In the past (clock skew): valid, but nothing to wait for.
  const auto past =
      read_response(response(429, {{"Retry-After", "Sun, 01 Mar 2026 11:59:00 GMT"}}), kNow);
  EXPECT_FALSE(past.blocked_until_ns);
  EXPECT_EQ(past.bad_values, 0);
}

TEST(OpenAi, RetryAfterZeroMeansRetryNow) {
  const auto s = read_response(response(429, {{"retry-after", "0"}}), kNow);
  EXPECT_FALSE(s.blocked_until_ns);
}

TEST(OpenAi, A429ThatSaysNothingWaitsTheDefault) {
  const auto s = read_response(response(429, {}), kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs);
  EXPECT_EQ(s.format, ResponseFormat::auto_detect);
  EXPECT_TRUE(s.budgets.empty());
}

TEST(OpenAi, RetryAfterIsIgnoredOutsideA429) {
  const auto s = read_response(response(503, {{"retry-after", "30"}}), kNow);
  EXPECT_FALSE(s.blocked_until_ns);
}

TEST(OpenAi, GarbageIsCountedAndIgnored) {
  const auto s =
      read_response(response(429,
                             {
                                 {"x-ratelimit-limit-requests", "abc"},
                                 {"x-ratelimit-limit-tokens", "-5"},
                                 {"x-ratelimit-remaining-requests", "1e9"},
                                 {"x-ratelimit-remaining-tokens", "99999999999999999999"},
                                 {"x-ratelimit-reset-requests", "6m0"},
                                 {"x-ratelimit-reset-tokens", "-1s"},
                                 {"retry-after-ms", "soon"},
                                 {"retry-after", "Tue, 03 Mar 2026 12:00:00 GMT"},
                             }),
                    kNow);
  EXPECT_EQ(s.bad_values, 8) << problems(s);
  EXPECT_EQ(s.problems.size(), 8u);
  EXPECT_TRUE(s.budgets.empty());
  // Nothing usable: the default, not a wild cooldown.
  EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs);
  EXPECT_NE(problems(s).find("x-ratelimit-reset-requests: \"6m0\""), std::string::npos)
      << problems(s);
}

TEST(OpenAi, HugeResetsAreRejectedNotCapped) {
  const auto s = read_response(response(200, {{"x-ratelimit-remaining-requests", "0"},
                                              {"x-ratelimit-reset-requests", "26h"}}),
                               kNow);
  EXPECT_EQ(s.bad_values, 1);
  EXPECT_FALSE(s.blocked_until_ns);
  const auto edge = read_response(response(200, {{"x-ratelimit-remaining-requests", "0"},
                                                 {"x-ratelimit-reset-requests", "25h"}}),
                                  kNow);
  EXPECT_EQ(edge.blocked_until_ns, kNow + kMaxSignalDurationNs);
}

TEST(OpenAi, RepeatedHeadersFirstValidWins) {
  const auto s = read_response(response(200, {{"x-ratelimit-remaining-requests", "abc"},
                                              {"X-Ratelimit-Remaining-Requests", "5"},
                                              {"x-ratelimit-remaining-requests", "7"},
                                              {"retry-after", "x"},
                                              {"retry-after", "3"},
                                              {"retry-after", "4"}}),
                               kNow);
  EXPECT_EQ(find(s, BudgetKind::requests)->remaining, 5);
  EXPECT_EQ(s.bad_values, 2) << problems(s);
}

TEST(OpenAi, LongAndControlValuesAreQuotedShortInProblems) {
  const std::string long_value(200, 'x');
  const auto s = read_response(response(200, {{"x-ratelimit-limit-tokens", long_value},
                                              {"x-ratelimit-limit-requests", "1\x01"}}),
                               kNow);
  ASSERT_EQ(s.problems.size(), 2u);
  for (const auto& p : s.problems) EXPECT_LT(p.size(), 140u) << p;
  EXPECT_NE(problems(s).find("\"1?\""), std::string::npos) << problems(s);
}

// --- Azure OpenAI --------------------------------------------------------------------------

TEST(Azure, MinusOneAndBareZeroMeanUnknown) {
  const auto s = read_response(response(200, {{"x-ms-region", "East US"},
                                              {"apim-request-id", "c0ffee"},
                                              {"x-ratelimit-limit-requests", "0"},
                                              {"x-ratelimit-remaining-requests", "-1"},
                                              {"x-ratelimit-remaining-tokens", "0"}}),
                               kNow);
  EXPECT_EQ(s.format, ResponseFormat::azure_openai);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
  EXPECT_TRUE(s.budgets.empty());
  EXPECT_FALSE(s.blocked_until_ns);
}

TEST(Azure, RealValuesAndA429) {
  const auto s = read_response(response(429,
                                        {{"x-ratelimit-remaining-requests", "-1"},
                                         {"x-ratelimit-remaining-requests", "12"},
                                         {"x-ratelimit-remaining-tokens", "0"},
                                         {"x-ratelimit-reset-tokens", "45s"},
                                         {"retry-after-ms", "3000"},
                                         {"retry-after", "3"}},
                                        "", ResponseFormat::azure_openai),
                               kNow);
  EXPECT_EQ(find(s, BudgetKind::requests)->remaining, 12);
  EXPECT_EQ(find(s, BudgetKind::tokens)->remaining, 0);
  EXPECT_EQ(s.blocked_until_ns, kNow + 45 * kS);
  EXPECT_EQ(s.bad_values, 0);
}

TEST(Azure, DetectedFromAzureMlHeaders) {
  EXPECT_EQ(detect_format(response(
                200, {{"azureml-model-session", "d1"}, {"x-ratelimit-remaining-tokens", "10"}})),
            ResponseFormat::azure_openai);
}

// --- Groq ----------------------------------------------------------------------------------

TEST(Groq, RequestsArePerDay) {
  const auto s = read_response(response(200, {{"x-groq-region", "gcp-asia-south1"},
                                              {"x-ratelimit-limit-requests", "14400"},
                                              {"x-ratelimit-limit-tokens", "6000"},
                                              {"x-ratelimit-remaining-requests", "14370"},
                                              {"x-ratelimit-remaining-tokens", "5997"},
                                              {"x-ratelimit-reset-requests", "2m59.56s"},
                                              {"x-ratelimit-reset-tokens", "7.66s"}}),
                               kNow);
  EXPECT_EQ(s.format, ResponseFormat::groq);
  const Budget* r = find(s, BudgetKind::requests, BudgetPeriod::day);
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->per_day);
  EXPECT_EQ(r->limit, 14400);
  EXPECT_EQ(r->reset_at_ns, kNow + 179 * kS + 560 * kMs);
  const Budget* t = find(s, BudgetKind::tokens);
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->per_day);
  EXPECT_EQ(t->reset_at_ns, kNow + 7 * kS + 660 * kMs);
}

TEST(Groq, ExplicitFormatWithoutGroqHeaders) {
  const auto s = read_response(
      response(200, {{"x-ratelimit-limit-requests", "1000"}}, "", ResponseFormat::groq), kNow);
  EXPECT_EQ(s.format, ResponseFormat::groq);
  EXPECT_TRUE(find(s, BudgetKind::requests, BudgetPeriod::day)->per_day);
}

// --- Anthropic -----------------------------------------------------------------------------

const Headers kAnthropicOk = {
    {"anthropic-ratelimit-requests-limit", "50"},
    {"anthropic-ratelimit-requests-remaining", "49"},
    {"anthropic-ratelimit-requests-reset", "2026-03-01T12:00:01.5Z"},
    {"anthropic-ratelimit-tokens-limit", "38000"},
    {"anthropic-ratelimit-tokens-remaining", "37000"},
    {"anthropic-ratelimit-tokens-reset", "2026-03-01T12:00:02Z"},
    {"anthropic-ratelimit-input-tokens-limit", "30000"},
    {"anthropic-ratelimit-input-tokens-remaining", "29000"},
    {"anthropic-ratelimit-input-tokens-reset", "2026-03-01T04:00:02-08:00"},
    {"anthropic-ratelimit-output-tokens-limit", "8000"},
    {"anthropic-ratelimit-output-tokens-remaining", "8000"},
    {"anthropic-ratelimit-output-tokens-reset", "2026-03-01T13:30:00+01:30"},
    {"request-id", "req_018"},
};

TEST(Anthropic, ReadsAllFourBudgets) {
  const auto s = read_response(response(200, kAnthropicOk), kNow);
  EXPECT_EQ(s.format, ResponseFormat::anthropic);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
  EXPECT_FALSE(s.blocked_until_ns);
  ASSERT_EQ(s.budgets.size(), 4u);
  EXPECT_EQ(find(s, BudgetKind::requests)->reset_at_ns, kNow + kS + kS / 2);
  EXPECT_EQ(find(s, BudgetKind::tokens)->limit, 38000);
  EXPECT_EQ(find(s, BudgetKind::input_tokens)->reset_at_ns, kNow + 2 * kS);  // -08:00 offset
  EXPECT_EQ(find(s, BudgetKind::output_tokens)->reset_at_ns, kNow);          // +01:30 offset
  EXPECT_EQ(find(s, BudgetKind::output_tokens)->remaining, 8000);
}

TEST(Anthropic, A429WithRetryAfterAndAnExhaustedBudget) {
  Headers h = {{"anthropic-ratelimit-input-tokens-remaining", "0"},
               {"anthropic-ratelimit-input-tokens-reset", "2026-03-01T12:00:45Z"},
               {"retry-after", "13"}};
  EXPECT_EQ(read_response(response(429, h), kNow).blocked_until_ns, kNow + 45 * kS);
  h[1].second = "2026-03-01T12:00:05Z";
  EXPECT_EQ(read_response(response(429, h), kNow).blocked_until_ns, kNow + 13 * kS);
}

TEST(Anthropic, ExhaustedOutputTokensBlockWithout429) {
  const auto s = read_response(
      response(200, {{"anthropic-ratelimit-output-tokens-remaining", "0"},
                     {"anthropic-ratelimit-output-tokens-reset", "2026-03-01T12:00:07.25+00:00"}}),
      kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + 7 * kS + 250 * kMs);
}

TEST(Anthropic, BadResets) {
  const auto s = read_response(
      response(200, {{"anthropic-ratelimit-requests-remaining", "0"},
                     {"anthropic-ratelimit-requests-reset", "2026-03-03T12:00:00Z"},  // 48 h ahead
                     {"anthropic-ratelimit-tokens-remaining", "0"},
                     {"anthropic-ratelimit-tokens-reset", "tomorrow"},
                     {"anthropic-ratelimit-input-tokens-reset", "2026-02-30T00:00:00Z"},
                     {"anthropic-ratelimit-output-tokens-reset", "2026-03-01T11:59:00Z"}}),
      kNow);
  EXPECT_EQ(s.bad_values, 3) << problems(s);
  EXPECT_FALSE(s.blocked_until_ns);  // the past reset (skew) is kept but blocks nothing
  EXPECT_EQ(find(s, BudgetKind::output_tokens)->reset_at_ns, kNow - 60 * kS);
  EXPECT_EQ(find(s, BudgetKind::input_tokens), nullptr);
}

// --- Mistral -------------------------------------------------------------------------------

TEST(Mistral, MinuteAndMonthBudgets) {
  const auto s = read_response(response(200, {{"x-ratelimit-limit-req-minute", "60"},
                                              {"x-ratelimit-remaining-req-minute", "0"},
                                              {"x-ratelimit-limit-tokens-minute", "500000"},
                                              {"x-ratelimit-remaining-tokens-minute", "499000"},
                                              {"x-ratelimit-limit-tokens-month", "1000000000"},
                                              {"x-ratelimit-remaining-tokens-month", "999"},
                                              {"x-ratelimit-limit-req-day", "5000"}}),
                               kNow);
  EXPECT_EQ(s.format, ResponseFormat::mistral);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
  ASSERT_EQ(s.budgets.size(), 4u);
  EXPECT_EQ(find(s, BudgetKind::requests)->remaining, 0);
  EXPECT_FALSE(s.blocked_until_ns);  // no reset time: no cooldown on a 200
  const Budget* month = find(s, BudgetKind::tokens, BudgetPeriod::month);
  ASSERT_NE(month, nullptr);
  EXPECT_TRUE(month->per_day);
  EXPECT_EQ(month->remaining, 999);
  EXPECT_EQ(find(s, BudgetKind::requests, BudgetPeriod::day)->limit, 5000);
}

TEST(Mistral, A429WithoutRetryAfterWaitsTheDefault) {
  const auto s = read_response(response(429, {{"x-ratelimit-remaining-req-minute", "0"}}), kNow);
  EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs);
}

// --- Gemini --------------------------------------------------------------------------------

std::string gemini_body(const std::string& quota_id, const std::string& metric,
                        const std::string& value, const std::string& retry_delay) {
  return R"({
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/)" +
         metric + R"(",
            "quotaId": ")" +
         quota_id + R"(",
            "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
            "quotaValue": )" +
         value + R"(
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": )" +
         retry_delay + R"(
      }
    ]
  }
})";
}

TEST(Gemini, PerMinuteQuotaWaitsRetryDelay) {
  const auto s = read_response(
      response(429, {{"content-type", "application/json; charset=UTF-8"}},
               gemini_body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                           "generate_content_free_tier_requests", "\"15\"", "\"1.5s\"")),
      kNow);
  EXPECT_EQ(s.format, ResponseFormat::gemini);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
  EXPECT_EQ(s.blocked_until_ns, kNow + kS + kS / 2);
  const Budget* r = find(s, BudgetKind::requests);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->limit, 15);
  EXPECT_EQ(r->remaining, 0);
  EXPECT_EQ(r->reset_at_ns, kNow + kS + kS / 2);
}

TEST(Gemini, InputTokenQuota) {
  const auto s = read_response(
      response(429, {},
               gemini_body("GenerateContentInputTokensPerModelPerMinute-FreeTier",
                           "generate_content_free_tier_input_token_count", "250000", "\"37s\"")),
      kNow);
  const Budget* b = find(s, BudgetKind::input_tokens);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->limit, 250000);
  EXPECT_EQ(s.blocked_until_ns, kNow + 37 * kS);
}

TEST(Gemini, PerDayQuotaBlocksUntilPacificMidnightAcrossMarchChange) {
  // 2026-03-08 01:30 PST; the day is 23 h long: the next midnight is 00:00 PDT, 07:00 UTC.
  const std::int64_t now = at("2026-03-08T09:30:00Z");
  const auto s = read_response(
      response(429, {},
               gemini_body("GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                           "generate_content_free_tier_requests", "\"200\"", "\"37s\"")),
      now);
  EXPECT_EQ(s.format, ResponseFormat::gemini);
  EXPECT_EQ(s.blocked_until_ns, at("2026-03-09T07:00:00Z"));
  const Budget* d = find(s, BudgetKind::requests, BudgetPeriod::day);
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->per_day);
  EXPECT_EQ(d->limit, 200);
  EXPECT_EQ(d->reset_at_ns, at("2026-03-09T07:00:00Z"));
}

TEST(Gemini, PerDayQuotaBlocksUntilPacificMidnightAcrossNovemberChange) {
  // 2026-11-01 01:30 PDT (the first 01:30); the day is 25 h long: midnight is 08:00 UTC.
  const std::int64_t now = at("2026-11-01T08:30:00Z");
  const auto s =
      read_response(response(429, {},
                             gemini_body("GenerateContentInputTokensPerModelPerDay-FreeTier",
                                         "generate_content_free_tier_input_token_count",
                                         "\"1000000\"", "\"12s\""),
                             ResponseFormat::gemini),
                    now);
  EXPECT_EQ(s.blocked_until_ns, at("2026-11-02T08:00:00Z"));
  EXPECT_LE(*s.blocked_until_ns - now, kMaxSignalDurationNs);
  EXPECT_NE(find(s, BudgetKind::input_tokens, BudgetPeriod::day), nullptr);
}

TEST(Gemini, ArrayWrappedBodyAndNoRetryInfo) {
  const std::string body = R"([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
    "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
      {"quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_output_token_count",
       "quotaId": "GenerateContentOutputTokensPerModelPerMinute", "quotaValue": "4000000"}]}]}}])";
  const auto s = read_response(response(429, {}, body), kNow);
  EXPECT_EQ(s.format, ResponseFormat::gemini);
  const Budget* b = find(s, BudgetKind::output_tokens);
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->reset_at_ns);
  EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs);
}

TEST(Gemini, TokenMetricAndNoQuotaValue) {
  const std::string body = R"({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
    "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
      {"quotaMetric": "generativelanguage.googleapis.com/generate_content_token_count"}, 7]},
      {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}, 3, {}]}})";
  const auto s = read_response(response(429, {}, body), kNow);
  const Budget* b = find(s, BudgetKind::tokens);
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->limit);
  EXPECT_EQ(b->reset_at_ns, kNow + 2 * kS);
  EXPECT_EQ(s.bad_values, 0) << problems(s);
}

TEST(Gemini, BadFieldsAreCounted) {
  const auto s = read_response(response(429, {},
                                        gemini_body("GenerateRequestsPerMinutePerProjectPerModel",
                                                    "generate_requests", "\"-3\"", "\"soon\"")),
                               kNow);
  EXPECT_EQ(s.bad_values, 2) << problems(s);
  EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs);
  const auto numeric =
      read_response(response(429, {},
                             gemini_body("GenerateRequestsPerMinutePerProjectPerModel",
                                         "generate_requests", "true", "{\"seconds\": 37}")),
                    kNow);
  EXPECT_EQ(numeric.bad_values, 2) << problems(numeric);
  const auto huge = read_response(
      response(429, {},
               gemini_body("GenerateRequestsPerMinutePerProjectPerModel", "generate_requests",
                           "18446744073709551615", "\"90001s\"")),
      kNow);
  EXPECT_EQ(huge.bad_values, 1) << problems(huge);
  EXPECT_EQ(find(huge, BudgetKind::requests)->limit, 999'999'999'999'999);
}

TEST(Gemini, GarbageBodies) {
  for (const char* body : {"not json", "{\"error\": 5}", "[]", "{\"ok\": true", "[1]"}) {
    const auto s = read_response(response(429, {}, body, ResponseFormat::gemini), kNow);
    EXPECT_EQ(s.bad_values, 1) << body;
    EXPECT_EQ(s.blocked_until_ns, kNow + kDefault429CooldownNs) << body;
  }
  const auto empty = read_response(response(429, {}, " ", ResponseFormat::gemini), kNow);
  EXPECT_EQ(empty.bad_values, 0);
  const auto no_details = read_response(
      response(429, {}, R"({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}})"), kNow);
  EXPECT_EQ(no_details.format, ResponseFormat::gemini);
  EXPECT_EQ(no_details.bad_values, 0);
  std::string huge(kMaxParsedBodyBytes + 1, ' ');
  huge[0] = '{';
  const auto big = read_response(response(429, {}, huge, ResponseFormat::gemini), kNow);
  EXPECT_EQ(big.bad_values, 1);
  EXPECT_EQ(detect_format(response(429, {}, huge)), ResponseFormat::auto_detect);
}

TEST(Gemini, A200IsNotACooldown) {
  const auto s =
      read_response(response(200, {}, R"({"candidates": []})", ResponseFormat::gemini), kNow);
  EXPECT_EQ(s.bad_values, 1);  // not an error object
  EXPECT_FALSE(s.blocked_until_ns);
}

// --- detection -----------------------------------------------------------------------------

TEST(Detect, EveryDialect) {
  EXPECT_EQ(detect_format(response(200, kOpenAiOk)), ResponseFormat::openai);
  EXPECT_EQ(detect_format(response(200, kAnthropicOk)), ResponseFormat::anthropic);
  EXPECT_EQ(detect_format(response(200, {{"X-RateLimit-Limit-Tokens-Minute", "5"}})),
            ResponseFormat::mistral);
  EXPECT_EQ(detect_format(response(200, {{"x-ratelimit-remaining-req-month", "5"}})),
            ResponseFormat::mistral);
  EXPECT_EQ(detect_format(response(200, {{"x-ratelimit-limit-req-week", "5"}})),
            ResponseFormat::openai);  // not a Mistral period: OpenAI-like by its prefix
  EXPECT_EQ(detect_format(response(200, {{"x-ratelimit-limit-foo-minute", "5"}})),
            ResponseFormat::openai);
  EXPECT_EQ(detect_format(response(200, {{"x-groq-region", "us"}, {"x-ratelimit-a", "1"}})),
            ResponseFormat::groq);
  EXPECT_EQ(detect_format(response(200, {{"x-groq-region", "us"}})), ResponseFormat::auto_detect);
  EXPECT_EQ(detect_format(response(200, {{"content-type", "text/plain"}}, "hello")),
            ResponseFormat::auto_detect);
  EXPECT_EQ(detect_format(response(400, {}, R"({"error": {"code": 400, "status": "INVALID"}})")),
            ResponseFormat::auto_detect);
  EXPECT_EQ(detect_format(response(400, {}, R"({"error": {"details": [1, {"@type": 5}]}})")),
            ResponseFormat::auto_detect);
  EXPECT_EQ(detect_format(response(
                429, {},
                R"({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.Help"}]}})")),
            ResponseFormat::gemini);
  EXPECT_EQ(detect_format(response(429, {}, "{broken")), ResponseFormat::auto_detect);
}

TEST(Detect, ExplicitFormatIsKept) {
  const auto s = read_response(response(200, kOpenAiOk, "", ResponseFormat::anthropic), kNow);
  EXPECT_EQ(s.format, ResponseFormat::anthropic);
  EXPECT_TRUE(s.budgets.empty());
}

TEST(Names, BudgetKindsAndPeriods) {
  EXPECT_EQ(to_string(BudgetKind::requests), "requests");
  EXPECT_EQ(to_string(BudgetKind::tokens), "tokens");
  EXPECT_EQ(to_string(BudgetKind::input_tokens), "input_tokens");
  EXPECT_EQ(to_string(BudgetKind::output_tokens), "output_tokens");
  EXPECT_EQ(to_string(static_cast<BudgetKind>(99)), "unknown");
  EXPECT_EQ(to_string(BudgetPeriod::minute), "minute");
  EXPECT_EQ(to_string(BudgetPeriod::day), "day");
  EXPECT_EQ(to_string(BudgetPeriod::month), "month");
  EXPECT_EQ(to_string(static_cast<BudgetPeriod>(99)), "unknown");
}

}  // namespace
}  // namespace ratelimit::detail
