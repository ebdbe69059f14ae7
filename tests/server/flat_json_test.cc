// The flat request-body parser (server/flat_json.h): what it reads itself, and that everything
// else is left to the full JSON parser. Its answers through Body must be the DOM's: checked by
// parsing each body both ways.
#include "flat_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "handler_parts.h"

namespace ratelimit::server {
namespace {

TEST(FlatJson, ReadsTheCommonShape) {
  FlatJson f;
  ASSERT_TRUE(f.parse(" {\"model\" : \"gpt-4o\",\"tokens\":1500, \"output_tokens\": -3}\r\n"));
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].key, "model");
  EXPECT_TRUE(f[0].is_string);
  EXPECT_EQ(f[0].text, "gpt-4o");
  EXPECT_EQ(f.find("tokens")->integer, 1500);
  EXPECT_EQ(f.find("output_tokens")->integer, -3);
  EXPECT_EQ(f.find("output_tokens")->text, "-3");
  EXPECT_EQ(f.find("wait_ms"), nullptr);
  ASSERT_TRUE(f.parse("{}"));
  EXPECT_EQ(f.size(), 0u);
  ASSERT_TRUE(f.parse("{\"n\":0,\"big\":999999999999999999}"));
  EXPECT_EQ(f.find("big")->integer, 999'999'999'999'999'999);
}

TEST(FlatJson, LeavesEverythingElseToTheFullParser) {
  FlatJson f;
  for (const char* text : {
           "",  // empty
           "[]",
           "\"s\"",
           "1",  // not an object
           "{\"a\":1",
           "{\"a\":1,}",
           "{,}",  // truncated, trailing comma
           "{\"a\" 1}",
           "{a:1}",
           "{\"a\":}",  // malformed
           "{\"a\":1} x",
           "{\"a\":1}{}",            // trailing content
           "{\"a\":\"x\\ny\"}",      // an escape
           "{\"a\":\"\xc3\xa9\"}",   // non-ASCII text
           "{\"a\":\"tab\there\"}",  // a control character
           "{\"a\":1.5}",
           "{\"a\":1e3}",
           "{\"a\":1E3}",  // not an integer
           "{\"a\":01}",
           "{\"a\":-0}",
           "{\"a\":-}",
           "{\"a\":+1}",
           "{\"a\":1234567890123456789}",       // 19 digits
           "{\"a\":18446744073709551616}",      // beyond 64 bits
           "{\"a\":-99999999999999999999999}",  // far beyond
           "{\"a\":true}",
           "{\"a\":null}",  // not a string or an integer
           "{\"a\":{}}",
           "{\"a\":[1]}",        // nested
           "{\"a\":1,\"a\":2}",  // a duplicate key
           "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9}",  // 9 fields
       }) {
    EXPECT_FALSE(f.parse(text)) << text;
  }
}

// Body answers the same whether the body parsed flat or through the DOM: each body is read as
// sent (flat when it can) and with a space-padded nested copy that forces the DOM path.
TEST(FlatJson, BodyAnswersLikeTheDom) {
  auto answers = [](const std::string& text) {
    Request req;
    req.method = "POST";
    req.path = "/v1/acquire";
    req.body = text;
    std::string error;
    auto b = handler_parts::Body::parse(req, {"model", "tokens", "wait_ms", "all", "z"}, error);
    std::string out = b ? "ok" : "refused: " + error;
    if (b) {
      bool bad = false;
      std::string e1, e2, e3, e4;
      auto m = b->model(e1, bad);
      auto t = b->count("tokens", std::nullopt, -5, e2);
      auto w = b->count("wait_ms", 0, 0, e3);
      auto a = b->flag("all", e4);
      out += "|" + (m ? *m : e1) + "|" + (t ? std::to_string(*t) : e2) + "|" +
             (w ? std::to_string(*w) : e3) + "|" + (a ? std::to_string(*a) : e4) + "|" +
             std::to_string(b->has("z")) + "|" + b->raw("tokens").dump();
    }
    return out;
  };
  for (const std::string flat : {
           R"({"model":"gpt-4o","tokens":1500})",
           R"({"model":"gpt-4o","tokens":-6})",
           R"({"model":"gpt-4o","tokens":9007199254740992})",
           R"({"model":"gpt-4o","tokens":"12"})",
           R"({"model":12,"tokens":1})",
           R"({"model":"","tokens":1})",
           R"({"tokens":1})",
           R"({"model":"m"})",
           R"({"model":"m","tokens":1,"wait_ms":-1})",
           R"({"model":"m","tokens":1,"all":1})",
           R"({"model":"m","tokens":1,"all":"yes","z":0})",
           R"({"model":"m","tokens":1,"unknown":1})",
       }) {
    // The DOM copy: the same fields plus a nested one that is never read ("z" is accepted).
    std::string nested = flat;
    const bool has_z = flat.find("\"z\"") != std::string::npos;
    if (!has_z) nested.insert(nested.size() - 1, R"(,"z":{"n":[1]})");
    std::string expected = answers(nested);
    std::string got = answers(flat);
    if (!has_z) {
      // The nested copy has "z": compare everything but that answer and raw().
      auto cut = [](std::string s) {
        auto bar = s.rfind('|');
        if (bar == std::string::npos) return s;
        auto before = s.rfind('|', bar - 1);
        return s.substr(0, before);
      };
      expected = cut(expected);
      got = cut(got);
    }
    EXPECT_EQ(got, expected) << flat;
  }
}

}  // namespace
}  // namespace ratelimit::server
