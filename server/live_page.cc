#include "live_page.h"

namespace ratelimit::server {
namespace {

// Model and upstream names are user data: they only ever reach the page through textContent,
// never HTML.
constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ratelimit: live quotas</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #fafbfc; }
  h1 { font-size: 1.2rem; margin: 0 0 .25rem; }
  #status { color: #5a6272; margin-bottom: 1rem; }
  #status.error { color: #b3261e; }
  table { border-collapse: collapse; width: 100%; max-width: 72rem; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6ea; vertical-align: middle; }
  th { font-weight: 600; color: #5a6272; }
  .usage { display: flex; align-items: center; gap: .5rem; }
  .bar { position: relative; width: 9rem; height: .6rem; background: #e8ebef; border-radius: .3rem; overflow: hidden; }
  .fill { position: absolute; inset: 0 auto 0 0; background: #2f7d32; }
  .fill.warn { background: #c77700; }
  .fill.full { background: #b3261e; }
  .num { font-variant-numeric: tabular-nums; white-space: nowrap; }
  .denied { color: #b3261e; }
  .empty { color: #5a6272; padding: 1rem .6rem; }
  .usage + .usage { margin-top: .2rem; }
  .label { color: #5a6272; width: 1.8rem; }
  .provider { color: #5a6272; font-size: .9em; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .25rem; }
  #proxy table + table { margin-top: .75rem; }
  .all { color: #5a6272; }
</style>
</head>
<body>
<h1>ratelimit: live quotas</h1>
<div id="status">connecting…</div>
<table>
  <thead><tr><th>Model</th><th>Requests / min</th><th>Tokens / min</th><th>Requests today</th><th>Next request</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<section id="proxy" hidden>
<h2>Proxy</h2>
<table>
  <thead><tr><th>Tokens committed</th><th>429s avoided</th><th>429s received</th><th>Passed unknown</th><th>In flight</th></tr></thead>
  <tbody id="proxy-totals"></tbody>
</table>
<table>
  <thead><tr><th>Upstream</th><th>Model</th><th>Requests</th><th>Upstream latency</th></tr></thead>
  <tbody id="proxy-rows"></tbody>
</table>
</section>
<script>
"use strict";
(function () {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) {
    sessionStorage.setItem("ratelimit-token", params.get("token"));
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  const token = sessionStorage.getItem("ratelimit-token");
  const status = document.getElementById("status");
  const rows = document.getElementById("rows");
  const proxySection = document.getElementById("proxy");
  const proxyTotals = document.getElementById("proxy-totals");
  const proxyRows = document.getElementById("proxy-rows");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function usage(used, limit) {
    const cell = el("td");
    const box = el("div", "usage");
    const num = el("span", "num", limit > 0 ? used + " / " + limit : used + " (no limit)");
    if (limit > 0) {
      const ratio = Math.min(1, used / limit);
      const bar = el("div", "bar");
      const fill = el("div", "fill" + (ratio >= 1 ? " full" : ratio >= 0.8 ? " warn" : ""));
      fill.style.width = (ratio * 100).toFixed(1) + "%";
      bar.appendChild(fill);
      box.appendChild(bar);
    }
    box.appendChild(num);
    cell.appendChild(box);
    return cell;
  }
  // Input and output tokens, under the total, for a model whose quota limits them apart.
  function split(cell, m) {
    if (!(m.max_input_tpm > 0 || m.max_output_tpm > 0)) return;
    for (const [label, used, limit] of [["in", m.input_tpm, m.max_input_tpm],
                                        ["out", m.output_tpm, m.max_output_tpm]]) {
      const part = usage(used, limit).firstChild;
      part.insertBefore(el("span", "label", label + " "), part.firstChild);
      cell.appendChild(part);
    }
  }
  function clock(iso) { return new Date(iso).toLocaleTimeString(); }
  // What the provider said (observe): a cooldown, and budgets left until their reset.
  function provider(cell, learned) {
    if (!learned) return;
    const said = [];
    if (learned.cooldown_until) said.push("cooldown until " + clock(learned.cooldown_until));
    for (const [name, what] of [["requests", "requests"], ["tokens", "tokens"],
                                ["input_tokens", "input tokens"],
                                ["output_tokens", "output tokens"]]) {
      const c = learned[name];
      if (c) said.push(c.left + " " + what + " left until " + clock(c.until));
    }
    if (said.length > 0) cell.appendChild(el("div", "provider", "; provider: " + said.join(", ")));
  }
  function next(decision, learned) {
    let cell;
    if (decision.allowed) {
      cell = el("td", "", "allowed");
    } else {
      const wait = decision.retry_after_ms === null ? "never (estimate above the limit)"
                   : "in " + (decision.retry_after_ms / 1000).toFixed(1) + " s";
      cell = el("td", "denied", decision.code + ", " + wait);
    }
    provider(cell, learned);
    return cell;
  }
  function render(models) {
    const names = Object.keys(models).sort();
    rows.replaceChildren();
    if (names.length === 0) {
      const td = el("td", "empty", "No models yet: set a quota or send a request.");
      td.colSpan = 5;
      const tr = el("tr");
      tr.appendChild(td);
      rows.appendChild(tr);
      return;
    }
    for (const name of names) {
      const m = models[name];
      const tr = el("tr", "model");
      tr.dataset.model = name;
      tr.appendChild(el("td", "name", name));
      tr.appendChild(usage(m.rpm, m.max_rpm));
      const tokens = usage(m.tpm, m.max_tpm);
      split(tokens, m);
      tr.appendChild(tokens);
      tr.appendChild(usage(m.rpd, m.max_rpd));
      tr.appendChild(next(m.decision, m.learned));
      rows.appendChild(tr);
    }
  }
  // The limiting proxy (serve --upstream): totals, then per upstream its requests by outcome
  // with its latency, and one row per model under it.
  const kOutcomes = ["forwarded", "limited", "upstream_429", "upstream_error", "unlimited",
                     "invalid", "client_gone"];
  function outcomes(counts) {
    const known = kOutcomes.filter((o) => counts[o] > 0);
    const other = Object.keys(counts).filter((o) => !kOutcomes.includes(o)).sort();
    const said = known.concat(other).map((o) => o + " " + counts[o]);
    return said.length > 0 ? said.join(", ") : "none";
  }
  function seconds(s) { return s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s"; }
  function latency(l) {
    if (!l || l.count === 0) return "no calls yet";
    return "p50 " + seconds(l.p50_seconds) + ", p99 " + seconds(l.p99_seconds) + ", mean " +
           seconds(l.sum_seconds / l.count) + " (" + l.count + " calls)";
  }
  function proxyRow(upstream, model, counts, lat) {
    const tr = el("tr", "proxy");
    tr.dataset.upstream = upstream;
    if (model !== null) tr.dataset.model = model;
    tr.appendChild(el("td", "upstream", model === null ? upstream : ""));
    tr.appendChild(model === null ? el("td", "all", "all models")
                                  : el("td", "name", model === "" ? "(no model)" : model));
    tr.appendChild(el("td", "num", outcomes(counts)));
    tr.appendChild(el("td", "num", lat === undefined ? "" : latency(lat)));
    return tr;
  }
  function renderProxy(proxy) {
    proxySection.hidden = !proxy;
    proxyTotals.replaceChildren();
    proxyRows.replaceChildren();
    if (!proxy) return;
    const totals = el("tr", "proxy-totals");
    for (const n of [proxy.tokens_committed, proxy.waited, proxy.upstream_429,
                     proxy.passed_unknown, proxy.in_flight]) {
      totals.appendChild(el("td", "num", String(n)));
    }
    proxyTotals.appendChild(totals);
    for (const name of Object.keys(proxy.upstreams).sort()) {
      const u = proxy.upstreams[name];
      proxyRows.appendChild(proxyRow(name, null, u.requests, u.latency));
      for (const model of Object.keys(u.models).sort()) {
        proxyRows.appendChild(proxyRow(name, model, u.models[model], undefined));
      }
    }
  }
  async function poll() {
    try {
      const headers = token ? { "Authorization": "Bearer " + token } : {};
      const res = await fetch("/v1/stats", { headers, cache: "no-store" });
      if (res.status === 401) {
        status.textContent = "this server needs a token: open the page as /#token=<token>";
        status.className = "error";
        return;
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const body = await res.json();
      render(body.models);
      renderProxy(body.proxy);
      status.textContent = "updated " + new Date().toLocaleTimeString() + " · " +
                           Object.keys(body.models).length + " models";
      status.className = "";
    } catch (e) {
      status.textContent = "cannot reach the server (" + e.message + "); retrying";
      status.className = "error";
    }
  }
  poll();
  setInterval(poll, 1000);
})();
</script>
</body>
</html>
)html";

}  // namespace

std::string_view live_page_html() { return kPage; }

}  // namespace ratelimit::server
