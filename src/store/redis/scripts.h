// Internal: the Redis store's Lua scripts, one per store operation (one round trip each).
//
// Keys of one model (one hash tag, "{m-<digest of the name>}", so a cluster proxy keeps them
// on one node):
//   S  hash: name, no (the model's number), seq (last reservation), gen (day generation),
//      req/tok/inp (running totals of the live window), ds/dn (day start µs, requests today),
//      lc (cooldown until, ns), lr/lt/li/lo + "u" (learned ceilings: left, until ns),
//      nw (newest entry µs), xc (entries in X), exp (when the keys' expiry was last set)
//   Z  sorted set: one member per live request (its seq), scored by its time in µs
//   E  hash: seq → "<input> <output> <r|c|u> <gen>" (reserved, committed, recorded)
//   X  sorted set: cancelled reservations still inside their window (seq → µs), so that a
//      second settle says "already settled"
// Store-wide keys ("{cfg}"): M meta hash (epoch, ver, id, next_no, up/uq: unknown policy),
// Q quotas (name → "rpm tpm rpd in out daystart"), A aliases, N numbers (no → name).
//
// Times: entries are whole microseconds (doubles are exact to 2^53: µs since 1970 are
// ~2^51); learned limits keep the provider's nanoseconds as decimal strings. Counts are
// bounded by 2^53-1 by the C++ side.
#pragma once

namespace ratelimit::detail::redis_lua {

// ARGV: 1 name, 2 now µs ("" → the server's TIME), 3 now ns, 4 Pacific midnights (µs,
// space-separated, ascending; the day rule picks the first after the day's start).
inline constexpr const char* kPrelude = R"lua(
local S, Z, E, X, M, Q, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local name = ARGV[1]
local function fmt(x) return string.format('%.0f', x) end
local now_us, now_ns
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now_ns = fmt(now_us) .. '000'
else
  now_us = tonumber(ARGV[2])
  now_ns = ARGV[3]
end
local function ns_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local midnights = {}
for w in string.gmatch(ARGV[4], '%d+') do midnights[#midnights + 1] = tonumber(w) end
local raw = redis.call('HGETALL', S)
local st = {}
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local existed = #raw > 0
if existed and st.name ~= name then
  return redis.error_reply('RL_COLLISION ' .. tostring(st.name))
end
local function n(k) local v = st[k]; if v then return tonumber(v) end; return 0 end
local req, tok, inp, gen, seq = n('req'), n('tok'), n('inp'), n('gen'), n('seq')
local day_s = nil
if st.ds then day_s = tonumber(st.ds) end
local day_n = n('dn')
local newest, xc, refreshed = n('nw'), n('xc'), n('exp')
local cool = st.lc
local ceil = {}
local ckeys = {'lr', 'lt', 'li', 'lo'}
for _, k in ipairs(ckeys) do
  if st[k] then ceil[k] = {tonumber(st[k]), st[k .. 'u']} end
end
local function parse_quota(v)
  local t = {}
  for w in string.gmatch(v, '%d+') do t[#t + 1] = tonumber(w) end
  return t
end
local known, deny, q = 0, 0, {0, 0, 0, 0, 0, 0}
local qv = redis.call('HGET', Q, name)
local meta = redis.call('HMGET', M, 'up', 'uq', 'epoch')
local has_quota = 0
if qv then known = 1; has_quota = 1; q = parse_quota(qv)
elseif meta[1] == 'default_quota' and meta[2] then known = 1; q = parse_quota(meta[2])
elseif meta[1] == 'deny' then deny = 1 end
local epoch = tonumber(meta[3] or '0')
local function day_end(ds)
  if q[6] == 1 then
    for _, m in ipairs(midnights) do if m > ds then return m end end
  end
  return ds + 86400000000
end
local dirty = false
local function entry(v)
  local a, b, k, g = string.match(v, '^(%d+) (%d+) (%a) (%d+)$')
  return tonumber(a), tonumber(b), k, tonumber(g)
end
-- The wall clock stepped back: entries after now are clamped to now.
if newest > now_us then
  local late = redis.call('ZRANGEBYSCORE', Z, '(' .. fmt(now_us), '+inf')
  for _, m in ipairs(late) do redis.call('ZADD', Z, fmt(now_us), m) end
  late = redis.call('ZRANGEBYSCORE', X, '(' .. fmt(now_us), '+inf')
  for _, m in ipairs(late) do redis.call('ZADD', X, fmt(now_us), m) end
  newest = now_us
  dirty = true
end
-- An entry exactly 60 s old has left the window.
local cutoff = fmt(now_us - 60000000)
local old = redis.call('ZRANGEBYSCORE', Z, '-inf', cutoff)
if #old > 0 then
  for i = 1, #old, 500 do
    local part = {unpack(old, i, math.min(i + 499, #old))}
    local vals = redis.call('HMGET', E, unpack(part))
    for _, v in ipairs(vals) do
      if v then
        local a, b = entry(v)
        req = req - 1; tok = tok - a - b; inp = inp - a
      end
    end
    redis.call('HDEL', E, unpack(part))
  end
  redis.call('ZREMRANGEBYSCORE', Z, '-inf', cutoff)
  dirty = true
end
if xc > 0 then xc = xc - redis.call('ZREMRANGEBYSCORE', X, '-inf', cutoff) end
if day_s then
  if day_s > now_us then day_s = now_us; dirty = true end
  if now_us >= day_end(day_s) then day_s = nil; day_n = 0; gen = gen + 1; dirty = true end
end
if cool and not ns_lt(now_ns, cool) then cool = nil; dirty = true end
for _, k in ipairs(ckeys) do
  if ceil[k] and not ns_lt(now_ns, ceil[k][2]) then ceil[k] = nil; dirty = true end
end
local function save()
  local h = {'name', name, 'req', fmt(req), 'tok', fmt(tok), 'inp', fmt(inp), 'gen', fmt(gen),
             'seq', fmt(seq), 'dn', fmt(day_n), 'nw', fmt(newest), 'xc', fmt(xc)}
  local gone = {}
  if day_s then h[#h + 1] = 'ds'; h[#h + 1] = fmt(day_s) elseif st.ds then gone[#gone + 1] = 'ds' end
  if cool then h[#h + 1] = 'lc'; h[#h + 1] = cool elseif st.lc then gone[#gone + 1] = 'lc' end
  for _, k in ipairs(ckeys) do
    if ceil[k] then
      h[#h + 1] = k; h[#h + 1] = fmt(ceil[k][1]); h[#h + 1] = k .. 'u'; h[#h + 1] = ceil[k][2]
    elseif st[k] then
      gone[#gone + 1] = k; gone[#gone + 1] = k .. 'u'
    end
  end
  -- Idle keys expire: nothing of a model outlives two days without use (refreshed hourly).
  local expire = not existed or now_us - refreshed > 3600000000 or now_us < refreshed
  if expire then h[#h + 1] = 'exp'; h[#h + 1] = fmt(now_us) end
  redis.call('HSET', S, unpack(h))
  if #gone > 0 then redis.call('HDEL', S, unpack(gone)) end
  if not st.no then
    local no = redis.call('HINCRBY', M, 'next_no', 1)
    redis.call('HSET', N, no, name)
    redis.call('HSET', S, 'no', no)
    st.no = tostring(no)
  end
  if expire then
    for _, k in ipairs({S, Z, E, X}) do redis.call('PEXPIRE', k, 176400000) end
  end
end
local function learned_reply()
  local out = {cool or ''}
  for _, k in ipairs(ckeys) do
    if ceil[k] then out[#out + 1] = fmt(ceil[k][1]); out[#out + 1] = ceil[k][2]
    else out[#out + 1] = '-1'; out[#out + 1] = '' end
  end
  return out
end
)lua";

// ARGV 5: mode (0 stats, 1 decide, 2 check and record), 6 input, 7 output.
// Returns {allowed, seq, gen, epoch, no, known, deny, has_quota, q1..q6, req, tok, inp,
// day_started, day_start, day_end, day_n, now_ns, rt, tt, ti, to, learned (9)}.
inline constexpr const char* kCheck = R"lua(
local mode = tonumber(ARGV[5])
local ein, eout = tonumber(ARGV[6]), tonumber(ARGV[7])
local total = ein + eout
local allowed = 1
local rt, tt, ti, to = -1, -1, -1, -1
local function tokens_time(need, dim)
  local acc, start = 0, 0
  while true do
    local page = redis.call('ZRANGE', Z, start, start + 255, 'WITHSCORES')
    if #page == 0 then return -1 end
    local members = {}
    for i = 1, #page, 2 do members[#members + 1] = page[i] end
    local vals = redis.call('HMGET', E, unpack(members))
    for i, v in ipairs(vals) do
      if v then
        local a, b = entry(v)
        if dim == 0 then acc = acc + a + b elseif dim == 1 then acc = acc + a else acc = acc + b end
        if acc >= need then return tonumber(page[2 * i]) end
      end
    end
    start = start + 256
  end
end
if ein < 0 or eout < 0 then
  allowed = 0
elseif known == 0 and deny == 1 then
  allowed = 0
else
  if cool and ns_lt(now_ns, cool) then allowed = 0 end
  local function ceiling(c, need)
    if c and ns_lt(now_ns, c[2]) and (need > c[1] or c[1] == 0) then allowed = 0 end
  end
  ceiling(ceil.lr, 1); ceiling(ceil.lt, total); ceiling(ceil.li, ein); ceiling(ceil.lo, eout)
  local unlimited = q[1] == 0 and q[2] == 0 and q[3] == 0 and q[4] == 0 and q[5] == 0
  if known == 1 and not unlimited then
    if q[3] > 0 and day_s and day_n >= q[3] then allowed = 0 end
    if q[1] > 0 and req >= q[1] then
      allowed = 0
      if mode > 0 then
        local r = redis.call('ZRANGE', Z, req - q[1], req - q[1], 'WITHSCORES')
        rt = tonumber(r[2])
      end
    end
    local function tokens(limit, usage, want, dim)
      if limit <= 0 or usage + want <= limit then return -1 end
      allowed = 0
      if want > limit or mode == 0 then return -1 end
      return tokens_time(usage + want - limit, dim)
    end
    tt = tokens(q[2], tok, total, 0)
    ti = tokens(q[4], inp, ein, 1)
    to = tokens(q[5], tok - inp, eout, 2)
  end
end
local de = -1
if day_s then de = day_end(day_s) end
local out = {allowed, 0, gen, epoch, 0, known, deny, has_quota, q[1], q[2], q[3], q[4], q[5],
             q[6], req, tok, inp, day_s and 1 or 0, day_s or -1, de, day_n, now_ns, rt, tt, ti,
             to}
for _, v in ipairs(learned_reply()) do out[#out + 1] = v end
if allowed == 1 and mode == 2 then
  seq = seq + 1
  out[2] = seq
  newest = now_us
  redis.call('ZADD', Z, fmt(now_us), fmt(seq))
  redis.call('HSET', E, fmt(seq), fmt(ein) .. ' ' .. fmt(eout) .. ' r ' .. fmt(gen))
  req = req + 1; tok = tok + total; inp = inp + ein
  if not day_s then day_s = now_us; day_n = 0 end
  day_n = day_n + 1
  local function take(k, m)
    local c = ceil[k]
    if not c then return end
    if m >= c[1] then c[1] = 0 else c[1] = c[1] - m end
  end
  take('lr', 1); take('lt', total); take('li', ein); take('lo', eout)
  save()
elseif dirty and existed then
  save()
end
if st.no then out[5] = tonumber(st.no) end
return out
)lua";

// ARGV 5, 6: input, output.
inline constexpr const char* kRecord = R"lua(
local ein, eout = tonumber(ARGV[5]), tonumber(ARGV[6])
seq = seq + 1
newest = now_us
redis.call('ZADD', Z, fmt(now_us), fmt(seq))
redis.call('HSET', E, fmt(seq), fmt(ein) .. ' ' .. fmt(eout) .. ' u ' .. fmt(gen))
req = req + 1; tok = tok + ein + eout; inp = inp + ein
if not day_s then day_s = now_us; day_n = 0 end
day_n = day_n + 1
save()
return {epoch, tonumber(st.no)}
)lua";

// ARGV 5 kind (commit|cancel), 6 seq, 7 generation of the Reservation (-1: by id), 8 from a
// Reservation (1|0), 9 input, 10 output, 11 the id's model number ("" : from a Reservation).
// Returns {status (ok|settled|not_found), released, epoch}.
inline constexpr const char* kSettle = R"lua(
local kind, key = ARGV[5], ARGV[6]
if ARGV[11] ~= '' and (not existed or st.no ~= ARGV[11] or tonumber(key) > seq) then
  return {'not_found', 0, epoch}
end
local status, released = 'ok', 0
local v = redis.call('HGET', E, key)
if v then
  local a, b, k, g = entry(v)
  if k ~= 'r' then
    status = 'settled'
  elseif kind == 'commit' then
    local na, nb = tonumber(ARGV[9]), tonumber(ARGV[10])
    tok = tok + (na + nb) - (a + b); inp = inp + na - a
    redis.call('HSET', E, key, fmt(na) .. ' ' .. fmt(nb) .. ' c ' .. fmt(g))
    if na < a or nb < b then released = 1 end
  else
    local t = redis.call('ZSCORE', Z, key)
    redis.call('ZREM', Z, key)
    redis.call('HDEL', E, key)
    redis.call('ZADD', X, t, key)
    xc = xc + 1
    req = req - 1; tok = tok - a - b; inp = inp - a
    if g == gen and day_s and day_n > 0 then day_n = day_n - 1 end
    released = 1
  end
elseif redis.call('ZSCORE', X, key) then
  status = 'settled'
elseif kind == 'cancel' and ARGV[8] == '1' and tonumber(ARGV[7]) == gen and day_s and day_n > 0 then
  -- Left the window: only a Reservation knows it never settled, so only it refunds the day.
  day_n = day_n - 1
end
if existed then save() end
if released == 1 then redis.call('HINCRBY', M, 'ver', 1) end
return {status, released, epoch}
)lua";

// ARGV 5 cooldown until (ns, "0": none), 6..13 ceilings (left, until ns; left -1: none) for
// requests, tokens, input, output. Returns {changed, epoch}.
inline constexpr const char* kLearn = R"lua(
local changed = 0
if ARGV[5] ~= '0' and (not cool or ns_lt(cool, ARGV[5])) then cool = ARGV[5]; changed = 1 end
for i, k in ipairs(ckeys) do
  local left, untl = tonumber(ARGV[4 + 2 * i]), ARGV[5 + 2 * i]
  if left >= 0 then
    local c = ceil[k]
    if not c or c[1] ~= left or c[2] ~= untl then ceil[k] = {left, untl}; changed = 1 end
  end
end
if changed == 1 or (dirty and existed) then save() end
if changed == 1 then redis.call('HINCRBY', M, 'ver', 1) end
return {changed, epoch}
)lua";

// Clears one model's usage and learned limits (the quota stays). KEYS: S Z E X M.
inline constexpr const char* kReset = R"lua(
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'req', 0, 'tok', 0, 'inp', 0, 'dn', 0, 'xc', 0)
  redis.call('HDEL', KEYS[1], 'ds', 'lc', 'lr', 'lru', 'lt', 'ltu', 'li', 'liu', 'lo', 'lou')
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
end
redis.call('HINCRBY', KEYS[5], 'ver', 1)
return 1
)lua";

// Sets fields of a config hash and bumps the epoch. KEYS: the hash, M. ARGV: field, value...
inline constexpr const char* kConfigSet = R"lua(
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
redis.call('HINCRBY', KEYS[2], 'ver', 1)
return redis.call('HINCRBY', KEYS[2], 'epoch', 1)
)lua";

// Sets a provider profile: quotas and aliases in one step. KEYS: the quotas hash, the aliases
// hash, M. ARGV: the number of quota fields and values, then those, then the alias pairs.
// Returns the new epoch.
inline constexpr const char* kProfileSet = R"lua(
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, n + 1)) end
if #ARGV > n + 1 then redis.call('HSET', KEYS[2], unpack(ARGV, n + 2, #ARGV)) end
redis.call('HINCRBY', KEYS[3], 'ver', 1)
return redis.call('HINCRBY', KEYS[3], 'epoch', 1)
)lua";

// Removes one field of a config hash. KEYS: the hash, M. ARGV: field. Returns {removed, epoch}.
inline constexpr const char* kConfigRemove = R"lua(
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if removed == 1 then
  redis.call('HINCRBY', KEYS[2], 'ver', 1)
  epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
end
return {removed, epoch}
)lua";

// At open: writes the quotas, aliases and policy Redis has none of yet, and the store's id.
// KEYS: Q, A, M. ARGV: id, policy, policy quota, #quotas, name, quota..., name, target...
// Returns {id, epoch}.
inline constexpr const char* kSeed = R"lua(
local Qk, Ak, Mk = KEYS[1], KEYS[2], KEYS[3]
redis.call('HSETNX', Mk, 'id', ARGV[1])
local changed = 0
if ARGV[2] ~= '' and redis.call('HEXISTS', Mk, 'up') == 0 then
  redis.call('HSET', Mk, 'up', ARGV[2], 'uq', ARGV[3])
  changed = 1
end
local nq = tonumber(ARGV[4])
local i = 5
for _ = 1, nq do
  changed = changed + redis.call('HSETNX', Qk, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  changed = changed + redis.call('HSETNX', Ak, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if changed > 0 then redis.call('HINCRBY', Mk, 'epoch', 1) end
return {redis.call('HGET', Mk, 'id'), tonumber(redis.call('HGET', Mk, 'epoch') or '0')}
)lua";

}  // namespace ratelimit::detail::redis_lua
