// Proxy figures for the tests of GET /v1/stats and of the live page (issue 14): the given
// requests ("upstream\tmodel\toutcome" -> count), fixed totals, and latency histograms for two
// upstreams with calls (two in (0.005, 0.025] s; one above the last bound) and an idle one.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "proxy.h"

namespace ratelimit::testing {

inline server::ProxyCounters proxy_counters_with(std::map<std::string, std::uint64_t> requests) {
  server::ProxyCounters c;
  c.requests = std::move(requests);
  c.tokens_committed = 1234;
  c.waited = 5;
  c.upstream_429 = 4;
  c.passed_unknown = 2;
  c.in_flight = 1;
  const std::size_t n = std::size(server::kProxyLatencyBounds) + 1;
  std::vector<std::uint64_t> openai(n), anthropic(n), gemini(n);
  openai[1] = 2;
  anthropic[n - 1] = 1;
  c.latency = {
      {"openai", {openai, 0.03}}, {"anthropic", {anthropic, 200.0}}, {"gemini", {gemini, 0}}};
  return c;
}

}  // namespace ratelimit::testing
