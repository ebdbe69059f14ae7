// The live page of `ratelimit serve` (GET /) rendered by headless Chromium against the real
// server process: rows, escaping of model names, the token from the URL fragment, input and
// output tokens and what the provider said; the limiting proxy's figures (from an in-process
// server whose handlers are given them).
#include <thread>

#include "handlers.h"
#include "proxy_counters_fixture.h"
#include "server_process.h"

namespace {

// --- 4. the live page in headless Chromium -----------------------------------------------------

// A minimal reading of the DOM Chromium dumps: the rows of the page's table, each cell's text
// as serialized (entities still escaped) and every element name seen outside raw-text
// elements. Attribute values are skipped by their quotes, so a `>` inside one cannot end a tag.
struct Cell {
  std::string cls;
  std::string raw;  // the cell's text as serialized: "&lt;" stays "&lt;"
};
struct Row {
  std::string raw_data_model;  // the data-model attribute as serialized
  std::vector<Cell> cells;
  std::string raw_data_upstream;  // proxy rows
  bool has_data_model = false;
};
struct Dom {
  std::vector<Row> rows;
  std::vector<Row> proxy_rows;        // <tr class="proxy">: per upstream, then its models
  std::vector<Row> proxy_totals;      // <tr class="proxy-totals">
  bool proxy_hidden = false;          // <section id="proxy" hidden>
  std::vector<std::string> elements;  // opening tag names, lower case, in order
  std::string status;                 // the text of <div id="status">
};

Dom read_dom(const std::string& html) {
  Dom dom;
  Row* row = nullptr;
  Cell* cell = nullptr;
  bool in_status = false;
  std::size_t i = 0;
  while (i < html.size()) {
    if (html[i] != '<') {
      const auto next = html.find('<', i);
      const std::string text =
          html.substr(i, next == std::string::npos ? std::string::npos : next - i);
      if (cell != nullptr) cell->raw += text;
      if (in_status) dom.status += text;
      i = next == std::string::npos ? html.size() : next;
      continue;
    }
    if (html.compare(i, 4, "<!--") == 0) {
      const auto end = html.find("-->", i);
      i = end == std::string::npos ? html.size() : end + 3;
      continue;
    }
    std::size_t j = i + 1;
    const bool closing = j < html.size() && html[j] == '/';
    if (closing) ++j;
    std::string name;
    while (j < html.size() &&
           (std::isalnum(static_cast<unsigned char>(html[j])) || html[j] == '-')) {
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(html[j])));
      ++j;
    }
    // Attributes up to '>', honouring quotes.
    std::map<std::string, std::string> attrs;
    while (j < html.size() && html[j] != '>') {
      if (std::isspace(static_cast<unsigned char>(html[j])) || html[j] == '/') {
        ++j;
        continue;
      }
      std::string key;
      while (j < html.size() && html[j] != '=' && html[j] != '>' &&
             !std::isspace(static_cast<unsigned char>(html[j]))) {
        key += html[j++];
      }
      std::string value;
      if (j < html.size() && html[j] == '=') {
        ++j;
        if (j < html.size() && (html[j] == '"' || html[j] == '\'')) {
          const char q = html[j++];
          const auto end = html.find(q, j);
          value = html.substr(j, end - j);
          j = end == std::string::npos ? html.size() : end + 1;
        } else {
          while (j < html.size() && html[j] != '>' &&
                 !std::isspace(static_cast<unsigned char>(html[j]))) {
            value += html[j++];
          }
        }
      }
      attrs[key] = value;
    }
    i = j < html.size() ? j + 1 : html.size();
    if (name.empty()) continue;  // <!doctype ...>
    if (!closing) {
      dom.elements.push_back(name);
      if (name == "script" || name == "style" || name == "title" || name == "textarea") {
        const auto end = html.find("</" + name, i);
        i = end == std::string::npos ? html.size() : end;
      } else if (name == "tr" && (attrs["class"] == "model" || attrs["class"] == "proxy" ||
                                  attrs["class"] == "proxy-totals")) {
        auto& list = attrs["class"] == "model"   ? dom.rows
                     : attrs["class"] == "proxy" ? dom.proxy_rows
                                                 : dom.proxy_totals;
        const bool has_model = attrs.count("data-model") > 0;
        list.push_back({attrs["data-model"], {}, attrs["data-upstream"], has_model});
        row = &list.back();
      } else if (name == "section" && attrs["id"] == "proxy") {
        dom.proxy_hidden = attrs.count("hidden") > 0;
      } else if (name == "td" && row != nullptr) {
        row->cells.push_back({attrs["class"], ""});
        cell = &row->cells.back();
      } else if (name == "div" && attrs["id"] == "status") {
        in_status = true;
      }
    } else if (name == "td") {
      cell = nullptr;
    } else if (name == "tr") {
      row = nullptr;
      cell = nullptr;
    } else if (name == "div") {
      in_status = false;
    }
  }
  return dom;
}

const Row* find_row(const Dom& dom, const std::string& raw_data_model) {
  for (const Row& r : dom.rows) {
    if (r.raw_data_model == raw_data_model) return &r;
  }
  return nullptr;
}

constexpr const char* kChromium = "/usr/bin/chromium";
const std::string kOddModel = "team/<b>bold</b> x";
const std::string kOddModelEscaped = "team/&lt;b&gt;bold&lt;/b&gt; x";

class LivePage : public ServerProcess {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kChromium))
        << kChromium << " is missing: the live-page tests need it; `apt-get install chromium`";
  }

  // gpt-4o: 3 of 10 requests, 300 of 1000 tokens; the odd model: 2 of 2 requests.
  void seed(const std::optional<std::string>& token) {
    Reply q = http("PUT", "/v1/quotas/gpt-4o", json{{"max_rpm", 10}, {"max_tpm", 1000}}, token);
    ASSERT_EQ(q.status, 200) << q.raw;
    for (int i = 0; i < 3; ++i) {
      Reply a = http("POST", "/v1/acquire", json{{"model", "gpt-4o"}, {"tokens", 100}}, token);
      ASSERT_EQ(a.status, 200) << a.raw;
    }
    Reply odd = http("PUT", "/v1/quotas/" + percent_encode(kOddModel), json{{"max_rpm", 2}}, token);
    ASSERT_EQ(odd.status, 200) << odd.raw;
    EXPECT_EQ(odd.body["model"], kOddModel) << odd.raw;
    for (int i = 0; i < 2; ++i) {
      Reply a = http("POST", "/v1/acquire", json{{"model", kOddModel}, {"tokens", 0}}, token);
      ASSERT_EQ(a.status, 200) << a.raw;
    }
  }

  // The DOM of `url` after the page ran. --virtual-time-budget lets the page's timers run
  // on virtual time; Chromium does not advance virtual time while a fetch is in flight, so
  // the budget ends only after the first GET /v1/stats has been answered and rendered, however
  // slow the (sanitized) server is. Should a dump still show the page before its first poll
  // ("connecting…"), it is taken again (at most 3 times), each with a fresh profile.
  Dom dump(const std::string& path, std::string* html_out = nullptr) {
    std::string html;
    for (int attempt = 0; attempt < 3; ++attempt) {
      const fs::path profile = dir_.path() / ("chromium-" + std::to_string(profiles_++));
      fs::create_directories(profile);
      Finished r = ratelimit::testing::run(
          {kChromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + profile.string(),
           "--virtual-time-budget=5000", "--dump-dom",
           "http://127.0.0.1:" + std::to_string(port_) + path},
          options(/*check_sanitizers=*/false), Millis(60'000));
      EXPECT_EQ(r.code, 0) << "chromium failed:\n" << r.err;
      html = r.out;
      if (html.find("<tbody id=\"rows\">") != std::string::npos &&
          read_dom(html).status.find("connecting") == std::string::npos) {
        break;
      }
      std::fprintf(stderr,
                   "chromium dump %d of %s showed the page before its first poll; "
                   "taking it again\n",
                   attempt + 1, path.c_str());
    }
    if (html_out != nullptr) *html_out = html;
    return read_dom(html);
  }

  void expect_rows(const Dom& dom, const std::string& html) {
    ASSERT_EQ(dom.rows.size(), 2u) << html;
    const Row* gpt = find_row(dom, "gpt-4o");
    ASSERT_NE(gpt, nullptr) << html;
    ASSERT_EQ(gpt->cells.size(), 5u) << html;
    EXPECT_EQ(gpt->cells[0].raw, "gpt-4o");
    EXPECT_EQ(gpt->cells[1].raw, "3 / 10");
    EXPECT_EQ(gpt->cells[2].raw, "300 / 1000");
    EXPECT_EQ(gpt->cells[3].raw, "3 (no limit)");
    EXPECT_EQ(gpt->cells[4].raw, "allowed");
    EXPECT_NE(html.find("<tr class=\"model\" data-model=\"gpt-4o\">"), std::string::npos);

    // The odd model: rows are sorted by name, so it is the second one. Its name is text:
    // serialized escaped, and no <b> element exists anywhere in the document.
    const Row& odd = dom.rows[1];
    ASSERT_EQ(odd.cells.size(), 5u) << html;
    EXPECT_EQ(odd.cells[0].raw, kOddModelEscaped) << html;
    EXPECT_NE(html.find(">" + kOddModelEscaped + "</td>"), std::string::npos) << html;
    EXPECT_EQ(odd.cells[1].raw, "2 / 2");
    EXPECT_EQ(odd.cells[2].raw, "0 (no limit)");
    EXPECT_EQ(odd.cells[3].raw, "2 (no limit)");
    EXPECT_EQ(odd.cells[4].cls, "denied");
    EXPECT_TRUE(odd.cells[4].raw.starts_with("rpm_exceeded, in ")) << odd.cells[4].raw;
    for (const std::string& e : dom.elements) EXPECT_NE(e, "b") << html;
  }

  int profiles_ = 0;
};

TEST_F(LivePage, RendersModelsAndEscapesNames) {
  ASSERT_NO_FATAL_FAILURE(
      start_server({"--backend", "memory", "serve", "--listen", "127.0.0.1:0"}));
  ASSERT_NO_FATAL_FAILURE(seed(std::nullopt));
  std::string html;
  const Dom dom = dump("/", &html);
  ASSERT_NO_FATAL_FAILURE(expect_rows(dom, html));
  EXPECT_NE(dom.status.find("2 models"), std::string::npos) << dom.status;
  // Without --upstream, /v1/stats has no "proxy": the section stays hidden and empty.
  EXPECT_TRUE(dom.proxy_hidden) << html;
  EXPECT_TRUE(dom.proxy_rows.empty()) << html;
  EXPECT_TRUE(dom.proxy_totals.empty()) << html;
  EXPECT_EQ(stop_server(SIGTERM), 0) << server_->err();
}

TEST_F(LivePage, TokenFromTheFragmentOrANeedsATokenMessage) {
  const std::string token = random_token();
  const fs::path token_file = dir_.path() / "token";
  write_file(token_file, token, 0600);
  ASSERT_NO_FATAL_FAILURE(start_server({"--backend", "memory", "serve", "--listen", "127.0.0.1:0",
                                        "--token-file", token_file.string()}));
  ASSERT_NO_FATAL_FAILURE(seed(token));

  std::string html;
  const Dom with = dump("/#token=" + token, &html);
  ASSERT_NO_FATAL_FAILURE(expect_rows(with, html));

  const Dom without = dump("/", &html);
  EXPECT_TRUE(without.rows.empty()) << html;
  EXPECT_NE(without.status.find("needs a token"), std::string::npos) << without.status;
  EXPECT_EQ(html.find("data-model"), std::string::npos) << html;
  EXPECT_EQ(stop_server(SIGTERM), 0) << server_->err();
}

TEST_F(LivePage, ShowsInputAndOutputTokensAndWhatTheProviderSaid) {
  ASSERT_NO_FATAL_FAILURE(
      start_server({"--backend", "memory", "serve", "--listen", "127.0.0.1:0"}));
  Reply q = http("PUT", "/v1/quotas/claude",
                 json{{"max_rpm", 10}, {"max_input_tpm", 2000}, {"max_output_tpm", 400}});
  ASSERT_EQ(q.status, 200) << q.raw;
  Reply a = http("POST", "/v1/acquire",
                 json{{"model", "claude"}, {"tokens", 100}, {"output_tokens", 50}});
  ASSERT_EQ(a.status, 200) << a.raw;
  // A 429 with Retry-After: the provider's cooldown, shown with the decision it causes.
  Reply o = http("POST", "/v1/observe",
                 json{{"model", "claude"}, {"status", 429}, {"headers", {{"retry-after", "30"}}}});
  ASSERT_EQ(o.status, 200) << o.raw;
  std::string html;
  const Dom dom = dump("/", &html);
  const Row* row = find_row(dom, "claude");
  ASSERT_NE(row, nullptr) << html;
  ASSERT_EQ(row->cells.size(), 5u) << html;
  EXPECT_EQ(row->cells[1].raw, "1 / 10");
  EXPECT_EQ(row->cells[2].raw, "150 (no limit)in 100 / 2000out 50 / 400") << html;
  EXPECT_EQ(row->cells[4].cls, "denied");
  EXPECT_TRUE(row->cells[4].raw.starts_with("provider_cooldown, in ")) << row->cells[4].raw;
  EXPECT_NE(row->cells[4].raw.find("; provider: cooldown until "), std::string::npos)
      << row->cells[4].raw;
  EXPECT_EQ(stop_server(SIGTERM), 0) << server_->err();
}

// The proxy's figures: an in-process server (no proxy process needed) whose handlers read
// fixed counters, as the server's own Proxy feeds them; upstream and model names are text.
TEST_F(LivePage, ShowsTheProxyFiguresWithNamesAsText) {
  ratelimit::Config config;
  config.backend = ratelimit::Backend::memory;
  config.providers = {ratelimit::Provider::local};
  auto limiter = ratelimit::RateLimiter::open(std::move(config));
  ASSERT_TRUE(limiter) << limiter.error().message;
  ratelimit::server::ServerOptions options;
  options.listen = {"127.0.0.1", 0};
  ratelimit::server::Server server(**limiter, options);
  server.handlers().set_proxy_counters([] {
    return ratelimit::testing::proxy_counters_with({{"openai\tgpt-4o\tforwarded", 3},
                                                    {"openai\tgpt-4o\tlimited", 1},
                                                    {"openai\t" + kOddModel + "\tforwarded", 2},
                                                    {"openai\t\tinvalid", 1},
                                                    {"anthropic\tclaude\tupstream_429", 4}});
  });
  auto port = server.bind();
  ASSERT_TRUE(port) << port.error().message;
  std::thread serving([&server] { server.run(); });
  port_ = *port;
  std::string html;
  const Dom dom = dump("/", &html);
  server.stop();
  serving.join();

  EXPECT_FALSE(dom.proxy_hidden) << html;
  ASSERT_EQ(dom.proxy_totals.size(), 1u) << html;
  std::vector<std::string> totals;
  for (const Cell& c : dom.proxy_totals[0].cells) totals.push_back(c.raw);
  EXPECT_EQ(totals, (std::vector<std::string>{"1234", "5", "4", "2", "1"}));

  // Upstreams sorted by name, each followed by its models sorted by name.
  struct Expected {
    std::string upstream;
    std::optional<std::string> model;  // nullopt: the upstream's own row
    std::vector<std::string> cells;
  };
  const std::vector<Expected> expected = {
      {"anthropic",
       std::nullopt,
       {"anthropic", "all models", "upstream_429 4",
        "p50 120.00 s, p99 120.00 s, mean 200.00 s (1 calls)"}},
      {"anthropic", "claude", {"", "claude", "upstream_429 4", ""}},
      {"gemini", std::nullopt, {"gemini", "all models", "none", "no calls yet"}},
      {"openai",
       std::nullopt,
       {"openai", "all models", "forwarded 5, limited 1, invalid 1",
        "p50 15.0 ms, p99 24.8 ms, mean 15.0 ms (2 calls)"}},
      {"openai", "", {"", "(no model)", "invalid 1", ""}},
      {"openai", "gpt-4o", {"", "gpt-4o", "forwarded 3, limited 1", ""}},
      {"openai", std::nullopt, {"", kOddModelEscaped, "forwarded 2", ""}},
  };
  ASSERT_EQ(dom.proxy_rows.size(), expected.size()) << html;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Row& row = dom.proxy_rows[i];
    EXPECT_EQ(row.raw_data_upstream, expected[i].upstream) << i;
    if (i + 1 < expected.size()) {  // the odd name's attribute is serialized escaped
      EXPECT_EQ(row.has_data_model, expected[i].model.has_value()) << i;
      EXPECT_EQ(row.raw_data_model, expected[i].model.value_or("")) << i;
    }
    std::vector<std::string> cells;
    for (const Cell& c : row.cells) cells.push_back(c.raw);
    EXPECT_EQ(cells, expected[i].cells) << i << "\n" << html;
  }
  EXPECT_TRUE(dom.proxy_rows.back().has_data_model);
  for (const std::string& e : dom.elements) EXPECT_NE(e, "b") << html;
}

}  // namespace
