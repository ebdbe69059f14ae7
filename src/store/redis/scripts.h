// Internal: the Redis store's Lua scripts, one per store operation (one round trip each).
//
// Keys of one model (one hash tag, "{m-<digest of the name>}", so a cluster proxy keeps them
// on one node):
//   T  string, the model's state packed with Redis's `struct` library (one GET and one SET per
//      script): format version 2 (a byte), then 11 doubles — running totals of the live window
//      (req/tok/inp), the day generation, the last reservation (seq), day start µs (-1: none)
//      and requests today, the newest entry µs, entries in X, when the keys' expiry was last
//      set, the model's number (0: none yet) — then 9 doubles, the quota as last read (known,
//      deny, has_quota, q1..q6), then four length-prefixed strings: the learned limits ("":
//      none; else "<cooldown until ns or -> <left> <until ns>" for requests, tokens, input and
//      output, "-1 -" for none), the model's name, and the configuration epoch and store id
//      the quota was read under. Every change of a quota or of the unknown-model policy bumps
//      the epoch (all go through the scripts below), so while both match, the quota is not
//      read and parsed again. Binary doubles instead
//      of MessagePack or text: every number↔text conversion in Redis's Lua is a sprintf or a
//      strtod (about 1,200 instructions each; see docs/benchmarks.md).
//   Z  sorted set: one member per live request, "<seq> <input> <output>" (so that pruning and
//      the token probes read Z alone), scored by its time in µs
//   E  hash: seq → "<input> <output> <r|c|u> <gen>" (reserved, committed, recorded), for
//      settling by seq
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
// space-separated, ascending; the day rule picks the first after the day's start; read only
// for a quota with that rule).
inline constexpr const char* kPrelude = R"lua(
local T, Z, E, X, M, Q, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local name = ARGV[1]
local sfmt = string.format
local STATE = '<Bddddddddddddddddddddic0ic0ic0ic0'
local NO_LEARNED = '- -1 - -1 - -1 - -1 -'
-- now_text: now_us in decimal (built from TIME's two texts without a sprintf).
local now_us, now_ns, now_text
if ARGV[2] == '' then
  local t = redis.call('TIME')
  local us = t[2]
  if #us < 6 then us = string.rep('0', 6 - #us) .. us end
  now_text = t[1] .. us
  now_us = tonumber(now_text)
  now_ns = now_text .. '000'
else
  now_text = ARGV[2]
  now_us = tonumber(now_text)
  now_ns = ARGV[3]
end
local function ns_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local raw = redis.call('GET', T)
local existed = raw ~= false
local req, tok, inp, gen, seq, day_s, day_n, newest, xc, refreshed, no = 0, 0, 0, 0, 0, nil, 0,
  0, 0, 0, nil
local cool = nil
local ceil = {}
local c_known, c_deny, c_has, c_q1, c_q2, c_q3, c_q4, c_q5, c_q6, c_epoch, c_sid
if existed then
  if string.byte(raw, 1) ~= 2 then
    return redis.error_reply('RL_VERSION the model state was written by another version')
  end
  local v, no_v, learned, owner
  v, req, tok, inp, gen, seq, day_s, day_n, newest, xc, refreshed, no_v, c_known, c_deny, c_has,
    c_q1, c_q2, c_q3, c_q4, c_q5, c_q6, learned, owner, c_epoch, c_sid = struct.unpack(STATE, raw)
  if owner ~= name then return redis.error_reply('RL_COLLISION ' .. tostring(owner)) end
  if day_s < 0 then day_s = nil end
  if no_v ~= 0 then no = no_v end
  if learned ~= '' then
    local f = {}
    for w in string.gmatch(learned, '%S+') do f[#f + 1] = w end
    if f[1] ~= '-' then cool = f[1] end
    for i, k in ipairs({'lr', 'lt', 'li', 'lo'}) do
      local left = tonumber(f[2 * i])
      if left >= 0 then ceil[k] = {left, f[2 * i + 1]} end
    end
  end
end
-- (Functions are defined where they are needed: each definition is a closure made per call.)
local meta = redis.call('HMGET', M, 'epoch', 'id')
local epoch_text, sid = meta[1] or '0', meta[2] or ''
local epoch = tonumber(epoch_text)
-- The quota: rpm tpm rpd in out, and the day rule (1: Pacific midnight). Locals, not a table
-- (one table less per call).
local known, deny, has_quota, q1, q2, q3, q4, q5, q6
if c_epoch == epoch_text and c_sid == sid then
  known, deny, has_quota, q1, q2, q3, q4, q5, q6 = c_known, c_deny, c_has, c_q1, c_q2, c_q3, c_q4,
    c_q5, c_q6
else
  known, deny, has_quota, q1, q2, q3, q4, q5, q6 = 0, 0, 0, 0, 0, 0, 0, 0, 0
  local function parse_quota(v)
    local a, b, c, d, e, f = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d)$')
    return tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f)
  end
  local qv = redis.call('HGET', Q, name)
  if qv then known = 1; has_quota = 1; q1, q2, q3, q4, q5, q6 = parse_quota(qv)
  else
    local policy = redis.call('HMGET', M, 'up', 'uq')
    if policy[1] == 'default_quota' and policy[2] then
      known = 1; q1, q2, q3, q4, q5, q6 = parse_quota(policy[2])
    elseif policy[1] == 'deny' then deny = 1 end
  end
end
local midnights = nil
local function day_end(ds)
  if q6 == 1 then
    if not midnights then
      midnights = {}
      for w in string.gmatch(ARGV[4], '%d+') do midnights[#midnights + 1] = tonumber(w) end
    end
    for _, m in ipairs(midnights) do if m > ds then return m end end
  end
  return ds + 86400000000
end
local dirty = false
-- A member of Z: "<seq> <input> <output>".
local function member(m)
  local sq, a, b = string.match(m, '^(%d+) (%d+) (%d+)$')
  return sq, tonumber(a), tonumber(b)
end
-- The wall clock stepped back: entries after now are clamped to now.
if newest > now_us then
  local late = redis.call('ZRANGEBYSCORE', Z, '(' .. sfmt('%d', now_us), '+inf')
  for _, m in ipairs(late) do redis.call('ZADD', Z, sfmt('%d', now_us), m) end
  late = redis.call('ZRANGEBYSCORE', X, '(' .. sfmt('%d', now_us), '+inf')
  for _, m in ipairs(late) do redis.call('ZADD', X, sfmt('%d', now_us), m) end
  newest = now_us
  dirty = true
end
-- An entry exactly 60 s old has left the window.
local cutoff = sfmt('%d', now_us - 60000000)
if req > 0 then
  local old = redis.call('ZRANGEBYSCORE', Z, '-inf', cutoff)
  if #old > 0 then
    for i = 1, #old, 500 do
      local part = {}
      for j = i, math.min(i + 499, #old) do
        local sq, a, b = member(old[j])
        part[#part + 1] = sq
        req = req - 1; tok = tok - a - b; inp = inp - a
      end
      redis.call('HDEL', E, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', Z, '-inf', cutoff)
    dirty = true
  end
end
if xc > 0 then xc = xc - redis.call('ZREMRANGEBYSCORE', X, '-inf', cutoff) end
if day_s then
  if day_s > now_us then day_s = now_us; dirty = true end
  if now_us >= day_end(day_s) then day_s = nil; day_n = 0; gen = gen + 1; dirty = true end
end
if cool and not ns_lt(now_ns, cool) then cool = nil; dirty = true end
-- (Learned ceilings are rare: the loops over them run only when there is one.)
if next(ceil) then
  for _, k in ipairs({'lr', 'lt', 'li', 'lo'}) do
    if ceil[k] and not ns_lt(now_ns, ceil[k][2]) then ceil[k] = nil; dirty = true end
  end
end
local function learned_text()
  if not (cool or ceil.lr or ceil.lt or ceil.li or ceil.lo) then return NO_LEARNED end
  -- "left until" of one ceiling ("-1 -": none).
  local function ceil_text(k)
    local c = ceil[k]
    if c then return sfmt('%d', c[1]) .. ' ' .. c[2] end
    return '-1 -'
  end
  return (cool or '-') .. ' ' .. ceil_text('lr') .. ' ' .. ceil_text('lt') .. ' ' ..
    ceil_text('li') .. ' ' .. ceil_text('lo')
end
local function save()
  if not no then
    no = redis.call('HINCRBY', M, 'next_no', 1)
    redis.call('HSET', N, sfmt('%d', no), name)
  end
  -- Idle keys expire: nothing of a model outlives two days without use (refreshed hourly).
  local expire = not existed or now_us - refreshed > 3600000000 or now_us < refreshed
  if expire then refreshed = now_us end
  local learned = learned_text()
  if learned == NO_LEARNED then learned = '' end
  local text = struct.pack(STATE, 2, req, tok, inp, gen, seq, day_s or -1, day_n, newest, xc,
    refreshed, no or 0, known, deny, has_quota, q1, q2, q3, q4, q5, q6, #learned,
    learned, #name, name, #epoch_text, epoch_text, #sid, sid)
  if expire then
    redis.call('SET', T, text)
    for _, k in ipairs({T, Z, E, X}) do redis.call('PEXPIRE', k, 176400000) end
  else
    redis.call('SET', T, text, 'KEEPTTL')
  end
end
)lua";

// ARGV 5: mode (0 stats, 1 decide, 2 check and record), 6 input, 7 output (decimal, as the
// client wrote them).
// Returns one string packed with `struct` (read by parse_check in shared.cc): reply format 1
// (a byte); a byte of flags (1 allowed, 2 known, 4 deny, 8 has_quota, 16 the Pacific-midnight
// day rule, 32 day started); 15 doubles: seq, gen, epoch, no, q1..q5, req, tok, inp,
// day_start, day_end, day_n; when not allowed 4 more, rt tt ti to (when allowed they are all
// -1); then two length-prefixed strings: now_ns, and the learned limits (cooldown until or
// "-", and left/until of the four ceilings, "-1 -" for none). One string rather than an array
// of 27: Redis converts each element of a Lua table into a reply of its own (17k instructions
// for 27), and the client reads the string in place; and as few fields as it can be, since
// `struct.pack` costs about 50 ns per field.
inline constexpr const char* kCheck = R"lua(
local mode = ARGV[5]  -- compared as text: no tonumber
local ein, eout = tonumber(ARGV[6]), tonumber(ARGV[7])
local total = ein + eout
local allowed = 1
local rt, tt, ti, to = -1, -1, -1, -1
if ein < 0 or eout < 0 then
  allowed = 0
elseif known == 0 and deny == 1 then
  allowed = 0
else
  if cool and ns_lt(now_ns, cool) then allowed = 0 end
  if next(ceil) then
    local function ceiling(c, need)
      if c and ns_lt(now_ns, c[2]) and (need > c[1] or c[1] == 0) then allowed = 0 end
    end
    ceiling(ceil.lr, 1); ceiling(ceil.lt, total); ceiling(ceil.li, ein); ceiling(ceil.lo, eout)
  end
  local unlimited = q1 == 0 and q2 == 0 and q3 == 0 and q4 == 0 and q5 == 0
  if known == 1 and not unlimited then
    if q3 > 0 and day_s and day_n >= q3 then allowed = 0 end
    if q1 > 0 and req >= q1 then
      allowed = 0
      if mode ~= '0' then
        local r = redis.call('ZRANGE', Z, req - q1, req - q1, 'WITHSCORES')
        rt = tonumber(r[2])
      end
    end
    if (q2 > 0 and tok + total > q2) or (q4 > 0 and inp + ein > q4) or
      (q5 > 0 and tok - inp + eout > q5) then
      local function tokens_time(need, dim)
        local acc, start = 0, 0
        while true do
          local page = redis.call('ZRANGE', Z, start, start + 255, 'WITHSCORES')
          if #page == 0 then return -1 end
          for i = 1, #page, 2 do
            local _, a, b = member(page[i])
            if dim == 0 then acc = acc + a + b elseif dim == 1 then acc = acc + a else
              acc = acc + b end
            if acc >= need then return tonumber(page[i + 1]) end
          end
          start = start + 256
        end
      end
      local function tokens(limit, usage, want, dim)
        if not (limit > 0 and usage + want > limit) then return -1 end
        allowed = 0
        if want > limit or mode == '0' then return -1 end
        return tokens_time(usage + want - limit, dim)
      end
      tt = tokens(q2, tok, total, 0)
      ti = tokens(q4, inp, ein, 1)
      to = tokens(q5, tok - inp, eout, 2)
    end
  end
end
local de = -1
if day_s then de = day_end(day_s) end
local grant = allowed == 1 and mode == '2'
-- The usage before this grant (the rules add the estimate themselves).
local u_req, u_tok, u_inp, u_ds, u_dn, u_learned = req, tok, inp, day_s, day_n, learned_text()
local granted_seq = 0
if grant then
  seq = seq + 1
  granted_seq = seq
  newest = now_us
  local key = sfmt('%d', seq)
  -- ARGV 6 and 7 are canonical decimals (the client's std::to_string of counts >= 0 here).
  local counts = ARGV[6] .. ' ' .. ARGV[7]
  redis.call('ZADD', Z, now_text, key .. ' ' .. counts)
  redis.call('HSET', E, key, counts .. ' r ' .. sfmt('%d', gen))
  req = req + 1; tok = tok + total; inp = inp + ein
  if not day_s then day_s = now_us; day_n = 0 end
  day_n = day_n + 1
  if next(ceil) then
    local function take(k, m)
      local c = ceil[k]
      if not c then return end
      if m >= c[1] then c[1] = 0 else c[1] = c[1] - m end
    end
    take('lr', 1); take('lt', total); take('li', ein); take('lo', eout)
  end
  save()
elseif dirty and existed then
  save()
end
-- (no: a model's first grant numbers it, in save.)
local flags = allowed + 2 * known + 4 * deny + 8 * has_quota + (q6 == 1 and 16 or 0) +
  (u_ds and 32 or 0)
if allowed == 1 then  -- (the probes are all -1)
  return struct.pack('<BBdddddddddddddddic0ic0', 1, flags, granted_seq, gen, epoch, no or 0, q1,
    q2, q3, q4, q5, u_req, u_tok, u_inp, u_ds or -1, de, u_dn, #now_ns, now_ns,
    #u_learned, u_learned)
end
return struct.pack('<BBdddddddddddddddddddic0ic0', 1, flags, granted_seq, gen, epoch, no or 0,
  q1, q2, q3, q4, q5, u_req, u_tok, u_inp, u_ds or -1, de, u_dn, rt, tt, ti, to,
  #now_ns, now_ns, #u_learned, u_learned)
)lua";

// ARGV 5, 6: input, output.
inline constexpr const char* kRecord = R"lua(
local ein, eout = tonumber(ARGV[5]), tonumber(ARGV[6])
seq = seq + 1
newest = now_us
redis.call('ZADD', Z, now_text, sfmt('%d %d %d', seq, ein, eout))
redis.call('HSET', E, sfmt('%d', seq), sfmt('%d %d u %d', ein, eout, gen))
req = req + 1; tok = tok + ein + eout; inp = inp + ein
if not day_s then day_s = now_us; day_n = 0 end
day_n = day_n + 1
save()
return {epoch, no}
)lua";

// ARGV 5 kind (commit|cancel), 6 seq, 7 generation of the Reservation (-1: by id), 8 from a
// Reservation (1|0), 9 input, 10 output, 11 the id's model number ("" : from a Reservation).
// Returns {status (ok|settled|not_found), released, epoch}.
inline constexpr const char* kSettle = R"lua(
local kind, key = ARGV[5], ARGV[6]
if ARGV[11] ~= '' and (not existed or no ~= tonumber(ARGV[11]) or tonumber(key) > seq) then
  return {'not_found', 0, epoch}
end
local status, released = 'ok', 0
local function entry(t)
  local a, b, k, g = string.match(t, '^(%d+) (%d+) (%a) (%d+)$')
  return tonumber(a), tonumber(b), k, tonumber(g)
end
local v = redis.call('HGET', E, key)
if v then
  local a, b, k, g = entry(v)
  if k ~= 'r' then
    status = 'settled'
  elseif kind == 'commit' then
    local na, nb = tonumber(ARGV[9]), tonumber(ARGV[10])
    tok = tok + (na + nb) - (a + b); inp = inp + na - a
    local old = sfmt('%s %d %d', key, a, b)
    local t = redis.call('ZSCORE', Z, old)
    redis.call('ZREM', Z, old)
    redis.call('ZADD', Z, t, sfmt('%s %d %d', key, na, nb))
    redis.call('HSET', E, key, sfmt('%d %d c %d', na, nb, g))
    if na < a or nb < b then released = 1 end
  else
    local m = sfmt('%s %d %d', key, a, b)
    local t = redis.call('ZSCORE', Z, m)
    redis.call('ZREM', Z, m)
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
for i, k in ipairs({'lr', 'lt', 'li', 'lo'}) do
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

// Clears one model's usage and learned limits (the quota stays). KEYS: T Z E X M.
inline constexpr const char* kReset = R"lua(
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local raw = redis.call('GET', KEYS[1])
if raw and string.byte(raw, 1) == 2 then
  local STATE = '<Bddddddddddddddddddddic0ic0ic0ic0'
  local _, _, _, _, gen, seq, _, _, newest, _, refreshed, no, _, _, _, _, _, _, _, _, _, _, name =
    struct.unpack(STATE, raw)
  -- The quota is read again (an empty epoch matches none).
  redis.call('SET', KEYS[1], struct.pack(STATE, 2, 0, 0, 0, gen + 1, seq, -1, 0, newest, 0,
    refreshed, no, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', #name, name, 0, '', 0, ''), 'KEEPTTL')
elseif raw then
  redis.call('DEL', KEYS[1])
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
