// The model name rule (model_name.h) on its own and through every public operation that takes a
// model name.
#include "ratelimit/model_name.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/ratelimit.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::string_view_literals;

bool valid(std::string_view name) { return !model_name_problem(name).has_value(); }

// --- model_name_problem: what is valid ---

TEST(ModelNameProblemTest, EmptyNameIsValid) { EXPECT_EQ(model_name_problem(""), std::nullopt); }

TEST(ModelNameProblemTest, PlainAsciiSlashesAndSpacesAreValid) {
  EXPECT_TRUE(valid("gemini-2.0-flash"));
  EXPECT_TRUE(valid("models/gemini-pro"));
  EXPECT_TRUE(valid("my model with spaces"));
  EXPECT_TRUE(valid(" "));
  EXPECT_TRUE(valid("/"));
  EXPECT_TRUE(valid("\"quoted\" and \\backslash\\"));
  // Every printable ASCII character, in one name.
  std::string printable;
  for (char c = 0x20; c < 0x7F; ++c) printable += c;
  EXPECT_TRUE(valid(printable));
}

TEST(ModelNameProblemTest, LengthLimitIsExactly256Bytes) {
  ASSERT_EQ(kMaxModelNameBytes, 256u);
  EXPECT_TRUE(valid(std::string(255, 'a')));
  EXPECT_TRUE(valid(std::string(256, 'a')));
  const auto problem = model_name_problem(std::string(257, 'a'));
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("257"), std::string::npos) << *problem;
  EXPECT_FALSE(valid(std::string(1 << 20, 'a')));  // 1 MiB
}

TEST(ModelNameProblemTest, LengthCountsBytesNotCodePoints) {
  std::string e_acute;
  for (int i = 0; i < 128; ++i) e_acute += "\xC3\xA9";  // 128 × é = 256 bytes
  ASSERT_EQ(e_acute.size(), 256u);
  EXPECT_TRUE(valid(e_acute));
  EXPECT_FALSE(valid(e_acute + "a"));  // 129 code points, 257 bytes
  // 85 × 日 (3 bytes) = 255 bytes; one more is 258.
  std::string kanji;
  for (int i = 0; i < 85; ++i) kanji += "\xE6\x97\xA5";
  EXPECT_TRUE(valid(kanji));
  EXPECT_FALSE(valid(kanji + "\xE6\x97\xA5"));
  // 64 emoji = 256 bytes.
  std::string emoji;
  for (int i = 0; i < 64; ++i) emoji += "\xF0\x9F\x98\x80";
  EXPECT_TRUE(valid(emoji));
  EXPECT_FALSE(valid(emoji + " "));
}

TEST(ModelNameProblemTest, MultibyteUtf8IsValid) {
  EXPECT_TRUE(valid("caf\xC3\xA9"));                           // é (U+00E9)
  EXPECT_TRUE(valid("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"));  // 日本語
  EXPECT_TRUE(valid("\xF0\x9F\x98\x80"));                      // 😀 (U+1F600)
  EXPECT_TRUE(valid("\xF4\x8F\xBF\xBF"));                      // U+10FFFF, the last code point
  EXPECT_TRUE(valid("\xC2\xA0"));                              // U+00A0 (no-break space)
  // The shortest and longest of each length, and either side of the surrogates.
  EXPECT_TRUE(valid("\xDF\xBF"));          // U+07FF
  EXPECT_TRUE(valid("\xE0\xA0\x80"));      // U+0800
  EXPECT_TRUE(valid("\xED\x9F\xBF"));      // U+D7FF
  EXPECT_TRUE(valid("\xEE\x80\x80"));      // U+E000
  EXPECT_TRUE(valid("\xEF\xBF\xBF"));      // U+FFFF
  EXPECT_TRUE(valid("\xF0\x90\x80\x80"));  // U+10000
}

// --- model_name_problem: what is not ---

TEST(ModelNameProblemTest, OverlongFormsAreInvalid) {
  EXPECT_FALSE(valid("\xC0\x80"));          // U+0000 in 2 bytes
  EXPECT_FALSE(valid("\xC1\xBF"));          // U+007F in 2 bytes
  EXPECT_FALSE(valid("\xE0\x80\x80"));      // U+0000 in 3 bytes
  EXPECT_FALSE(valid("\xE0\x9F\xBF"));      // U+07FF in 3 bytes
  EXPECT_FALSE(valid("\xF0\x80\x80\x80"));  // U+0000 in 4 bytes
  EXPECT_FALSE(valid("\xF0\x8F\xBF\xBF"));  // U+FFFF in 4 bytes
  EXPECT_FALSE(valid("a\xC0\xAFz"));        // overlong '/', the classic path trick
}

TEST(ModelNameProblemTest, SurrogatesAreInvalid) {
  EXPECT_FALSE(valid("\xED\xA0\x80"));              // U+D800
  EXPECT_FALSE(valid("\xED\xBF\xBF"));              // U+DFFF
  EXPECT_FALSE(valid("\xED\xA0\xBD\xED\xB8\x80"));  // a CESU-8 pair for U+1F600
}

TEST(ModelNameProblemTest, CodePointsAboveU10FFFFAreInvalid) {
  EXPECT_FALSE(valid("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(valid("\xF5\x80\x80\x80"));
  EXPECT_FALSE(valid("\xF7\xBF\xBF\xBF"));  // U+1FFFFF
}

TEST(ModelNameProblemTest, TruncatedSequencesAreInvalid) {
  EXPECT_FALSE(valid("ab\xC3"));
  EXPECT_FALSE(valid("\xE6\x97"));
  EXPECT_FALSE(valid("\xE6"));
  EXPECT_FALSE(valid("x\xF0\x9F\x98"));
  EXPECT_FALSE(valid("\xF4\x8F\xBF"));
  // Cut in the middle: a continuation byte is replaced by an ASCII one.
  EXPECT_FALSE(valid("\xC3z"));
  EXPECT_FALSE(valid("\xE6\x97z"));
  EXPECT_FALSE(valid("\xF0\x9F\x98z"));
}

TEST(ModelNameProblemTest, LoneContinuationBytesAreInvalid) {
  EXPECT_FALSE(valid("\x80"));
  EXPECT_FALSE(valid("\xBF"));
  EXPECT_FALSE(valid("a\x80z"));
  EXPECT_FALSE(valid("\xC3\xA9\xA9"));  // é followed by one continuation too many
}

TEST(ModelNameProblemTest, BytesF8ToFFAreInvalid) {
  for (int b = 0xF8; b <= 0xFF; ++b) {
    const std::string alone(1, static_cast<char>(b));
    EXPECT_FALSE(valid(alone)) << "byte 0x" << std::hex << b;
    EXPECT_FALSE(valid("model" + alone)) << "byte 0x" << std::hex << b;
    EXPECT_FALSE(valid(alone + "\x80\x80\x80\x80")) << "byte 0x" << std::hex << b;
  }
}

TEST(ModelNameProblemTest, EverySingleByteAboveAsciiIsInvalidAlone) {
  for (int b = 0x80; b <= 0xFF; ++b) {
    EXPECT_FALSE(valid(std::string(1, static_cast<char>(b)))) << "byte 0x" << std::hex << b;
  }
}

TEST(ModelNameProblemTest, ControlCharactersAreInvalid) {
  EXPECT_FALSE(valid("a\0b"sv));  // an embedded NUL, inside the view
  EXPECT_FALSE(valid("\0"sv));
  EXPECT_FALSE(valid("model\0"sv));
  EXPECT_FALSE(valid("\x1F"));
  EXPECT_FALSE(valid("tab\there"));
  EXPECT_FALSE(valid("line\n"));
  EXPECT_FALSE(valid("\r"));
  EXPECT_FALSE(valid("\x7F"));      // DEL
  EXPECT_FALSE(valid("\xC2\x80"));  // U+0080
  EXPECT_FALSE(valid("\xC2\x85"));  // U+0085 (NEL)
  EXPECT_FALSE(valid("\xC2\x9F"));  // U+009F
  EXPECT_TRUE(valid("\xC2\xA0"));   // U+00A0: the first after the C1 controls
  EXPECT_TRUE(valid("~"));          // U+007E: the last before DEL
  for (int c = 0; c < 0x20; ++c) {
    EXPECT_FALSE(valid(std::string(1, static_cast<char>(c)))) << "U+" << std::hex << c;
  }
}

TEST(ModelNameProblemTest, ProblemNamesTheOffendingByte) {
  const auto problem = model_name_problem("abc\xFF");
  ASSERT_TRUE(problem.has_value());
  EXPECT_FALSE(problem->empty());
  EXPECT_NE(problem->find('3'), std::string::npos) << *problem;  // byte 3
  const auto control = model_name_problem("ab\x01");
  ASSERT_TRUE(control.has_value());
  EXPECT_NE(*control, *problem);  // a control character is a different problem
}

TEST(ModelNameProblemTest, LengthIsCheckedOverAnInvalidByte) {
  // 257 bytes that also hold a bad byte: still refused (whichever reason is given first).
  std::string name(256, 'a');
  name += '\xFF';
  EXPECT_FALSE(valid(name));
}

// --- printable_model_name ---

TEST(PrintableModelNameTest, PrintableAsciiIsKept) {
  EXPECT_EQ(printable_model_name(""), "");
  EXPECT_EQ(printable_model_name("gemini-2.0-flash"), "gemini-2.0-flash");
  EXPECT_EQ(printable_model_name("models/a b"), "models/a b");
  // Every printable ASCII character but `"` and `\`, in names short enough not to be cut.
  std::string first, second;
  for (char c = 0x20; c < 0x7F; ++c) {
    if (c == '"' || c == '\\') continue;
    (c < 0x50 ? first : second) += c;
  }
  EXPECT_EQ(printable_model_name(first), first);
  EXPECT_EQ(printable_model_name(second), second);
}

TEST(PrintableModelNameTest, QuoteAndBackslashAreEscaped) {
  EXPECT_EQ(printable_model_name("\""), "\\\"");
  EXPECT_EQ(printable_model_name("\\"), "\\\\");
  EXPECT_EQ(printable_model_name("a\"b\\c"), "a\\\"b\\\\c");
}

TEST(PrintableModelNameTest, InvalidBytesAndControlsAreHexEscaped) {
  EXPECT_EQ(printable_model_name("a\0b"sv), "a\\x00b");
  EXPECT_EQ(printable_model_name("\x1F"), "\\x1f");
  EXPECT_EQ(printable_model_name("\x7F"), "\\x7f");
  EXPECT_EQ(printable_model_name("\n\t"), "\\x0a\\x09");
  EXPECT_EQ(printable_model_name("\xFF"), "\\xff");
  EXPECT_EQ(printable_model_name("x\x80y"), "x\\x80y");
  EXPECT_EQ(printable_model_name("\xC2\x80"), "\\xc2\\x80");           // U+0080, a control
  EXPECT_EQ(printable_model_name("\xC0\x80"), "\\xc0\\x80");           // overlong
  EXPECT_EQ(printable_model_name("\xED\xA0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(printable_model_name("ab\xC3"), "ab\\xc3");                // truncated
  // A bad lead byte does not swallow the valid text after it.
  EXPECT_EQ(printable_model_name("\xE6\x97\xC3\xA9"), "\\xe6\\x97\xC3\xA9");
}

TEST(PrintableModelNameTest, ValidUtf8IsKept) {
  for (const std::string_view name : {"caf\xC3\xA9"sv, "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"sv,
                                      "\xF0\x9F\x98\x80"sv, "\xF4\x8F\xBF\xBF"sv, "a\xC2\xA0z"sv}) {
    EXPECT_EQ(printable_model_name(name), name);
  }
}

TEST(PrintableModelNameTest, LongNamesAreCutWithAnEllipsis) {
  const std::string short_name(40, 'a');
  EXPECT_EQ(printable_model_name(short_name), short_name);

  const std::string long_name(256, 'b');
  const std::string out = printable_model_name(long_name);
  ASSERT_GE(out.size(), 3u);
  EXPECT_EQ(out.substr(out.size() - 3), "...");
  EXPECT_GE(out.size(), 60u);  // "about 80 bytes"
  EXPECT_LE(out.size(), 100u);
  EXPECT_EQ(out.substr(0, out.size() - 3), std::string(out.size() - 3, 'b'));

  const std::string huge = printable_model_name(std::string(1 << 20, 'c'));
  EXPECT_LE(huge.size(), 100u);
  EXPECT_EQ(huge.substr(huge.size() - 3), "...");
}

TEST(PrintableModelNameTest, CutNeverSplitsACharacterOrAnEscape) {
  std::string accents;
  for (int i = 0; i < 200; ++i) accents += "\xC3\xA9";
  const std::string a = printable_model_name(accents);
  EXPECT_LE(a.size(), 100u);
  EXPECT_EQ(a.substr(a.size() - 3), "...");
  EXPECT_EQ(model_name_problem(a), std::nullopt) << "the cut split a UTF-8 sequence";
  EXPECT_EQ(a.substr(0, a.size() - 3).size() % 2, 0u);

  for (int i = 0; i < 3; ++i) {  // shift the alignment of the 4-byte sequences
    std::string emoji(i, 'x');
    for (int j = 0; j < 100; ++j) emoji += "\xF0\x9F\x98\x80";
    const std::string e = printable_model_name(emoji);
    EXPECT_LE(e.size(), 100u);
    EXPECT_EQ(model_name_problem(e), std::nullopt) << "offset " << i;
  }

  const std::string controls = printable_model_name(std::string(200, '\x01'));
  EXPECT_LE(controls.size(), 100u);
  ASSERT_EQ(controls.substr(controls.size() - 3), "...");
  const std::string body = controls.substr(0, controls.size() - 3);
  ASSERT_EQ(body.size() % 4, 0u) << body;
  for (std::size_t i = 0; i < body.size(); i += 4) EXPECT_EQ(body.substr(i, 4), "\\x01");
}

TEST(PrintableModelNameTest, OutputIsAlwaysAValidPrintableName) {
  // Whatever goes in, what comes out is printable: valid UTF-8 without control characters.
  for (int b = 0; b <= 0xFF; ++b) {
    const std::string name = "m" + std::string(1, static_cast<char>(b)) + "x";
    const std::string out = printable_model_name(name);
    EXPECT_EQ(model_name_problem(out), std::nullopt) << "byte 0x" << std::hex << b;
  }
  for (const std::string_view name :
       {"\xC0\x80"sv, "\xE0\x80\x80"sv, "\xF0\x80\x80\x80"sv, "\xED\xA0\x80"sv,
        "\xF4\x90\x80\x80"sv, "\xE6\x97"sv, "\0\0\0"sv, "\xC2\x9F"sv}) {
    EXPECT_EQ(model_name_problem(printable_model_name(name)), std::nullopt);
  }
}

// --- through the public API ---

const ModelQuota kQuota{.max_rpm = 10, .max_tpm = 1000, .max_rpd = 100};

// Names that model_name_problem() refuses, one per kind of problem, with the bytes that must
// never appear raw in an error message.
struct BadName {
  const char* what;
  std::string name;
  std::string raw;  // bytes that must not reach a message
};

std::vector<BadName> bad_names() {
  return {
      {"nul", std::string("gpt\0x", 5), std::string("\0", 1)},
      {"newline", "gpt\nInjected: yes", "\n"},
      {"del", "gpt\x7F", "\x7F"},
      {"c1 control", "gpt\xC2\x85", "\xC2\x85"},
      {"invalid byte", "gpt\xFF", "\xFF"},
      {"overlong", "gpt\xC0\x80", "\xC0"},
      {"surrogate", "gpt\xED\xA0\x80", "\xED\xA0"},
      {"truncated", "gpt\xE6\x97", "\xE6\x97"},
      {"too long", std::string(257, 'g'), std::string(257, 'g')},
  };
}

void expect_invalid_argument(const Error& error, std::string_view operation, const BadName& bad) {
  SCOPED_TRACE(std::string(operation) + " / " + bad.what);
  EXPECT_EQ(error.code, ErrorCode::invalid_argument);
  const std::string prefix = "ratelimit." + std::string(operation) + ": ";
  EXPECT_EQ(error.message.rfind(prefix, 0), 0u) << error.message;
  EXPECT_EQ(error.message.find(bad.raw), std::string::npos) << error.message;
  // Every bad name is printed escaped: the whole message is printable ASCII.
  for (const char c : error.message) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7F)
        << "raw byte 0x" << std::hex << int{static_cast<unsigned char>(c)} << " in "
        << printable_model_name(error.message);
  }
}

TEST(InvalidModelApiTest, DecisionCodeValues) {
  EXPECT_EQ(to_string(DecisionCode::invalid_model), "invalid_model");
  EXPECT_EQ(static_cast<int>(DecisionCode::invalid_model), 8);
  EXPECT_EQ(static_cast<int>(DecisionCode::ok), 0);
  EXPECT_EQ(static_cast<int>(DecisionCode::unknown_model), 1);
  EXPECT_EQ(static_cast<int>(DecisionCode::unlimited), 2);
  EXPECT_EQ(static_cast<int>(DecisionCode::invalid_tokens), 3);
  EXPECT_EQ(static_cast<int>(DecisionCode::rpd_exceeded), 4);
  EXPECT_EQ(static_cast<int>(DecisionCode::rpm_exceeded), 5);
  EXPECT_EQ(static_cast<int>(DecisionCode::tpm_exceeded), 6);
  EXPECT_EQ(static_cast<int>(DecisionCode::store_unavailable), 7);
  EXPECT_FALSE(reason(DecisionCode::invalid_model).empty());
}

TEST(InvalidModelApiTest, DecideRefusesAnInvalidName) {
  auto f = testing::memory_limiter({{"gpt", kQuota}});
  std::uint64_t refused = 0;
  for (const BadName& bad : bad_names()) {
    SCOPED_TRACE(bad.what);
    const Decision d = f.limiter->decide(bad.name, 10);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.code, DecisionCode::invalid_model);
    EXPECT_EQ(d.retry_after, Duration::zero());
    EXPECT_EQ(d.stats, ModelStats{});
    EXPECT_FALSE(f.limiter->can_send(bad.name, 10));
    refused += 2;
    EXPECT_EQ(f.limiter->limiter_metrics().invalid_model, refused);
  }
  // Checked after invalid_tokens: a negative estimate wins.
  EXPECT_EQ(f.limiter->decide("gpt\xFF", -1).code, DecisionCode::invalid_tokens);
  // Nothing was created for them.
  auto models = f.limiter->models();
  ASSERT_TRUE(models);
  EXPECT_EQ(*models, std::vector<std::string>{"gpt"});
  auto metrics = f.limiter->metrics();
  ASSERT_TRUE(metrics);
  for (const auto& [name, m] : *metrics) EXPECT_EQ(model_name_problem(name), std::nullopt);
}

TEST(InvalidModelApiTest, TryAcquireRefusesAnInvalidName) {
  auto f = testing::memory_limiter({{"gpt", kQuota}});
  std::uint64_t refused = 0;
  for (const BadName& bad : bad_names()) {
    SCOPED_TRACE(bad.what);
    Reservation r = f.limiter->try_acquire(bad.name, 10);
    EXPECT_FALSE(r.granted());
    EXPECT_EQ(r.decision().code, DecisionCode::invalid_model);
    EXPECT_TRUE(r.id().empty());
    EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::invalid_argument);  // nothing to settle
    EXPECT_EQ(f.limiter->limiter_metrics().invalid_model, ++refused);
  }
  EXPECT_EQ(f.limiter->try_acquire("gpt\xFF", -5).decision().code, DecisionCode::invalid_tokens);
  // Nothing was counted against a model, nothing was recorded.
  auto metrics = f.limiter->metrics();
  ASSERT_TRUE(metrics);
  for (const auto& [name, m] : *metrics) EXPECT_EQ(model_name_problem(name), std::nullopt);
  auto stats = f.limiter->stats("gpt");
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->rpm, 0);
  EXPECT_EQ(stats->rpd, 0);
}

TEST(InvalidModelApiTest, OperationsGiveInvalidArgumentWithASafeMessage) {
  auto f = testing::memory_limiter({{"gpt", kQuota}});
  RateLimiter& rl = *f.limiter;
  std::uint64_t refused = 0;
  for (const BadName& bad : bad_names()) {
    auto recorded = rl.record_usage(bad.name, 1, 1);
    ASSERT_FALSE(recorded);
    expect_invalid_argument(recorded.error(), "record_usage", bad);
    auto stats = rl.stats(bad.name);
    ASSERT_FALSE(stats);
    expect_invalid_argument(stats.error(), "stats", bad);
    auto set = rl.set_quota(bad.name, kQuota);
    ASSERT_FALSE(set);
    expect_invalid_argument(set.error(), "set_quota", bad);
    auto quota = rl.quota(bad.name);
    ASSERT_FALSE(quota);
    expect_invalid_argument(quota.error(), "quota", bad);
    auto reset = rl.reset(bad.name);
    ASSERT_FALSE(reset);
    expect_invalid_argument(reset.error(), "reset", bad);
    auto removed = rl.remove_quota(bad.name);
    ASSERT_FALSE(removed);
    expect_invalid_argument(removed.error(), "remove_quota", bad);
    refused += 6;
    EXPECT_EQ(rl.limiter_metrics().invalid_model, refused) << bad.what;
  }
  // None of it reached the store.
  auto quotas = rl.quotas();
  ASSERT_TRUE(quotas);
  EXPECT_EQ(*quotas, (QuotaMap{{"gpt", kQuota}}));
  auto models = rl.models();
  ASSERT_TRUE(models);
  EXPECT_EQ(*models, std::vector<std::string>{"gpt"});
  EXPECT_EQ(rl.limiter_metrics().invalid_names_skipped, 0u);
}

TEST(InvalidModelApiTest, AcquireRefusesAnInvalidName) {
  auto f = testing::memory_limiter({{"gpt", kQuota}});
  const BadName bad = bad_names()[0];
  WaitOptions options;
  options.timeout = Duration::zero();
  auto acquired = f.limiter->acquire(bad.name, 1, options);
  ASSERT_FALSE(acquired);
  expect_invalid_argument(acquired.error(), "acquire", bad);
  EXPECT_EQ(f.limiter->limiter_metrics().invalid_model, 1u);
}

TEST(InvalidModelApiTest, OpenRefusesAnInvalidNameInTheConfig) {
  Config config;
  config.backend = Backend::memory;
  config.providers = {Provider::local};
  config.quotas = {{"ok", kQuota}, {std::string("bad\x01", 4), kQuota}};
  config.clock = std::make_shared<ManualClock>(testing::start_time());
  auto opened = RateLimiter::open(std::move(config));
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(opened.error().message.rfind("ratelimit.open: ", 0), 0u) << opened.error().message;
  EXPECT_EQ(opened.error().message.find('\x01'), std::string::npos);
}

TEST(InvalidModelApiTest, ValidNamesFirstUsedWorkAsBefore) {
  auto f = testing::memory_limiter({});
  RateLimiter& rl = *f.limiter;
  const std::string names[] = {"",
                               "caf\xC3\xA9",
                               "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
                               "\xF0\x9F\x98\x80 / \xF4\x8F\xBF\xBF",
                               std::string(256, 'n'),
                               "nbsp\xC2\xA0"};
  for (const std::string& name : names) {
    SCOPED_TRACE(printable_model_name(name));
    const Decision d = rl.decide(name, 10);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.code, DecisionCode::unknown_model);
    ASSERT_TRUE(rl.set_quota(name, ModelQuota{.max_rpm = 1}));
    auto q = rl.quota(name);
    ASSERT_TRUE(q);
    EXPECT_EQ(*q, ModelQuota{.max_rpm = 1});
    Reservation r = rl.try_acquire(name, 10);
    EXPECT_TRUE(r.granted());
    EXPECT_EQ(r.decision().code, DecisionCode::ok);
    EXPECT_EQ(rl.try_acquire(name, 10).decision().code, DecisionCode::rpm_exceeded);
    ASSERT_TRUE(r.commit(3, 4));
    ASSERT_TRUE(rl.record_usage(name, 1, 1));
    auto s = rl.stats(name);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->rpm, 2);
    EXPECT_EQ(s->tpm, 9);
    ASSERT_TRUE(rl.reset(name));
    s = rl.stats(name);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->rpm, 0);
  }
  EXPECT_EQ(rl.limiter_metrics().invalid_model, 0u);
  auto metrics = rl.metrics();
  ASSERT_TRUE(metrics);
  for (const std::string& name : names) {
    auto it = metrics->find(name);
    ASSERT_NE(it, metrics->end()) << printable_model_name(name);
    EXPECT_EQ(it->second.count(RequestOutcome::admitted), 1u);
    EXPECT_EQ(it->second.count(RequestOutcome::rpm_exceeded), 1u);
    EXPECT_EQ(it->second.count(RequestOutcome::recorded), 1u);
  }
}

TEST(InvalidModelApiTest, ResetOfAllModelsIsNotAnInvalidName) {
  auto f = testing::memory_limiter({{"gpt", kQuota}});
  ASSERT_TRUE(f.limiter->record_usage("gpt", 1, 1));
  ASSERT_TRUE(f.limiter->reset(""));
  auto s = f.limiter->stats("gpt");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rpm, 0);
  EXPECT_EQ(f.limiter->limiter_metrics().invalid_model, 0u);
}

}  // namespace
}  // namespace ratelimit
