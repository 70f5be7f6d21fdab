"""The three Lua scripts behind :mod:`ipc.ratelimit`: claim a lease, record a response, settle leases.

All three run atomically inside Redis and read the clock with ``TIME``, so every process agrees on
"now"; a test may pass the clock instead (``ARGV[1]``, empty in production). Times are
milliseconds (floats). A cluster sends them in one pipeline per round trip, in this order: the
responses it reports (:data:`UPDATE`), its settlements (:data:`SETTLE`), then its claims
(:data:`CLAIM`), so a claim sees everything the cluster learnt before it.

State per bucket (hash ``rl:bucket:<id>``, id = ``<discord hash>:<major params>``, or
``r:<route key>:<major params>`` until the hash is known):

``limit``, ``remaining``
    From ``X-RateLimit-Limit`` / ``-Remaining``; ``remaining`` counts down as tokens are granted,
    leased ones included.
``reset_at``
    When the current window ends: response time + ``X-RateLimit-Reset-After``, so the server's
    clock wins (a report says how long ago its response arrived, and the reset counts from then).
    A window we open ourselves (the old one ended) gets a provisional end, replaced by the first
    response of that window (``confirmed``).
``win``
    The window number; a response carrying an older number is stale: it cannot refill a bucket or
    open a window, but the window it was counted in may outlast the one tracked now, so it can
    push ``reset_at`` later (and, if the tracked window had ended, hold the bucket until then).
``window``
    The longest ``Reset-After`` seen: the provisional length of a new window.
``blocked``
    Until when a 429 (scope user or shared) blocks the bucket.

Beside it, ``rl:bucket:<id>:inflight`` (sorted set, score = deadline) holds one member per token
granted and not yet settled (``<lease id>:b<i>``): unused leased tokens and requests not yet
answered. A new window starts with ``limit - inflight`` tokens, as discord.py's own ``Ratelimit``
does with ``outgoing``, so a token taken in one window and sent late is never counted twice.
Tokens still in flight under a bucket's provisional id (``r:…``, taken before its hash was
known) belong to the same Discord bucket and count against it as well. While a bucket's limit is
unknown, one request at a time probes it, and nothing is leased.

The global limit is a sliding log (``rl:global``): at most ``global_limit`` entries with a stamp
in any window of ``global_window`` ms (Discord's second plus the margin), the strictest reading of
"50 per second", which also satisfies fixed-window and token-bucket servers. One entry per granted
slot (``<lease id>:g<i>``). A slot handed at once to a waiting request is stamped *now*, as before
leases. A leased slot may be spent any time until the lease expires (``lease ttl``), so it is
stamped at that expiry, its latest possible use: it counts in every window it could be sent in.
A settlement lowers the stamp of a leased slot that was used to the settlement's time (never
earlier than its use; a stamp is never raised: ``ZADD XX LT``) and removes the slots that went
unused. A claim that finds the window full answers how long until as many stamps have left it as
the cluster wants slots (a small batch), so that the cluster's waiters come back together. A
global 429 sets ``rl:global:block``.

Leases are capped in the script at a fraction of the window's capacity (``lease fraction`` of the
global limit, of a bucket's limit), and none are granted while the invalid-request guard is above
its soft threshold: then every request asks Redis, as before leases.

The scripts build bucket key names from a prefix passed in ``ARGV`` (the bucket id is only known
inside the script, from the shared route map), so they suit a single Redis or Sentinel, not Redis
Cluster.

The invalid-request guard counts 401/403/429 (not ``shared`` 429s) per fixed window in a hash
(``rl:invalid``, field = window number) and estimates the sliding count as
``current + previous * (1 - elapsed/window)``.
"""

from __future__ import annotations

import hashlib

__all__ = ("CLAIM", "UPDATE", "SETTLE", "SHAS", "TAKEN", "WAIT_BUCKET", "REFUSED", "GUARD_DELAY", "WAIT_GLOBAL")

#: Statuses returned by :data:`CLAIM` (first element of its reply).
TAKEN, WAIT_BUCKET, REFUSED, GUARD_DELAY, WAIT_GLOBAL = 0, 1, 2, 3, 4

_PRELUDE = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function guard_estimate(key, gw, now)
  local widx = math.floor(now / gw)
  local counts = redis.call('HMGET', key, tostring(widx), tostring(widx - 1))
  local cur = tonumber(counts[1]) or 0
  local prev = tonumber(counts[2]) or 0
  local elapsed = now - widx * gw
  return cur + prev * (1 - elapsed / gw), cur, prev, elapsed
end

-- tokens still in flight under the id a bucket had before its hash was known: the same Discord
-- bucket, so they count against it too
local function provisional(prefix, route, major, now)
  local pkey = prefix .. 'r:' .. route .. ':' .. major .. ':inflight'
  redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now)
  return redis.call('ZCARD', pkey)
end

local function members(lid, tag, first, count)
  local out = {}
  for i = first, first + count - 1 do out[#out + 1] = lid .. ':' .. tag .. i end
  return out
end
"""

#: KEYS: route map, global log, global block, invalid counts.
#: ARGV: now ('' = TIME), route key, major, bucket prefix, lease id, global exempt (0/1), bucket exempt (0/1),
#: guard exempt (0/1), guard delay served (0/1), waiters, bucket tokens reserved locally, global slots reserved
#: locally, bucket tokens to lease, global slots to lease, global limit, global window ms, lease ttl ms,
#: inflight ttl ms, guard soft, guard hard, guard window ms, guard max delay ms, probe poll ms, keep ms,
#: lease fraction, global slots this cluster's waiters want at once (how long to wait when the window is full).
#: Reply: {status, wait ms, bucket id, window number, invalid estimate, waiters served, bucket tokens for them,
#: global slots for them, bucket tokens leased, global slots leased, ms to the bucket's reset, bucket limit
#: (-1 = unknown), window confirmed by the server (0/1)}. Members granted: ``<lease id>:b0…`` (the waiters'
#: tokens first, then the leased ones) and ``<lease id>:g0…`` (likewise).
CLAIM = _PRELUDE + """
local now = clock(ARGV[1])
local gw = tonumber(ARGV[21])
local est, cur, prev, elapsed = guard_estimate(KEYS[4], gw, now)
local soft, hard = tonumber(ARGV[19]), tonumber(ARGV[20])
if ARGV[8] ~= '1' then
  if est >= hard then
    local wait
    if cur >= hard then
      wait = (gw - elapsed) + gw * (1 - hard / cur)
    else
      wait = gw * (1 - (hard - cur) / prev) - elapsed
    end
    return {2, math.ceil(math.max(wait, 1)), '', 0, math.floor(est), 0, 0, 0, 0, 0, 0, -1, 0}
  end
  if est > soft and ARGV[9] == '0' then
    local delay = tonumber(ARGV[22]) * (est - soft) / (hard - soft)
    if delay >= 1 then
      return {3, math.ceil(delay), '', 0, math.floor(est), 0, 0, 0, 0, 0, 0, -1, 0}
    end
  end
end
local leasing = est <= soft
local frac = tonumber(ARGV[25])
local n, rb, rg = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local lease_ttl = tonumber(ARGV[17])

local route, major, prefix, lid = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local keep = tonumber(ARGV[24])
local bid, bkey, ikey = '', nil, nil
local limit, remaining, reset_at, win, confirmed = nil, nil, nil, 0, 0
local avail_b, bwait = n, 0
if ARGV[7] == '0' then
  local hash = redis.call('HGET', KEYS[1], route)
  local early = 0
  if hash then
    bid = hash .. ':' .. major
    early = provisional(prefix, route, major, now)
  else
    bid = 'r:' .. route .. ':' .. major
  end
  bkey = prefix .. bid
  ikey = bkey .. ':inflight'
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now)
  local b = redis.call('HMGET', bkey, 'limit', 'remaining', 'reset_at', 'blocked', 'win', 'window', 'confirmed')
  limit, remaining, reset_at = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
  local blocked = tonumber(b[4]) or 0
  win = tonumber(b[5]) or 0
  local window = math.max(tonumber(b[6]) or 0, 1)
  confirmed = tonumber(b[7]) or 0
  if blocked > now then
    avail_b, bwait = 0, blocked - now
  elseif limit == nil then
    if redis.call('ZCARD', ikey) + early > 0 then avail_b, bwait = 0, tonumber(ARGV[23]) else avail_b = 1 end
  else
    if reset_at == nil or reset_at <= now then
      remaining = limit - redis.call('ZCARD', ikey) - early
      reset_at = now + window
      win = win + 1
      confirmed = 0
      redis.call('HSET', bkey, 'remaining', remaining, 'reset_at', reset_at, 'win', win, 'confirmed', 0)
      redis.call('PEXPIRE', bkey, math.ceil(window + keep))
    end
    avail_b = math.max(remaining, 0)
    if avail_b + rb < n then bwait = math.max(reset_at - now, 1) end
  end
end

local glimit, gwin = tonumber(ARGV[15]), tonumber(ARGV[16])
local free_g, gwait, gblocked = n, 0, false
if ARGV[6] == '0' then
  local gblock = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
  if gblock > now then
    free_g, gwait, gblocked = 0, gblock - now, true
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - gwin)
    free_g = math.max(glimit - redis.call('ZCARD', KEYS[2]), 0)
  end
end

local served = math.min(n, rb + avail_b, rg + free_g)
local bucket_short = bkey ~= nil and rb + avail_b < n
local global_short = ARGV[6] == '0' and rg + free_g < n
local need_b, need_g = math.max(served - rb, 0), math.max(served - rg, 0)
if ARGV[7] == '1' then need_b = 0 end
if ARGV[6] == '1' then need_g = 0 end
-- leases: only while the guard is quiet, never for a bucket whose limit is unknown, and only when
-- every waiter is served (a waiter left short means the capacity is contended, not spare)
local lease_b, lease_g = 0, 0
if leasing and bkey and limit ~= nil and not bucket_short and not global_short then
  local cap = math.max(1, math.ceil(limit * frac))
  lease_b = math.max(math.min(tonumber(ARGV[13]), avail_b - need_b, cap - need_b), 0)
end
if leasing and ARGV[6] == '0' and not gblocked and not bucket_short and not global_short then
  local cap = math.max(1, math.floor(glimit * frac))
  lease_g = math.max(math.min(tonumber(ARGV[14]), free_g - need_g, cap - need_g), 0)
end

if need_g + lease_g > 0 then
  local adds = {}
  for i = 0, need_g + lease_g - 1 do
    local stamp = now
    if i >= need_g then stamp = now + lease_ttl end
    adds[#adds + 1] = stamp
    adds[#adds + 1] = lid .. ':g' .. i
  end
  redis.call('ZADD', KEYS[2], unpack(adds))
  redis.call('PEXPIRE', KEYS[2], math.ceil(gwin * 2 + lease_ttl))
end
if bkey and need_b + lease_b > 0 then
  local ttl = tonumber(ARGV[18])
  local adds = {}
  for i = 0, need_b + lease_b - 1 do
    adds[#adds + 1] = now + lease_ttl + ttl
    adds[#adds + 1] = lid .. ':b' .. i
  end
  redis.call('ZADD', ikey, unpack(adds))
  redis.call('PEXPIRE', ikey, math.ceil((lease_ttl + ttl) * 2))
  if limit ~= nil then
    redis.call('HINCRBY', bkey, 'remaining', -(need_b + lease_b))
  end
end

local status, wait = 0, 0
if served < n then
  if global_short and not gblocked then
    -- the window is full: wake when as many stamps have left it as the cluster wants slots (its
    -- waiters on every bucket, up to a small batch), so they come back together in one round trip
    local lacking = math.max(math.min(tonumber(ARGV[26]) - rg - free_g, glimit), 1)
    local nth = redis.call('ZRANGE', KEYS[2], lacking - 1, lacking - 1, 'WITHSCORES')
    if not nth[2] then nth = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES') end
    if nth[2] then gwait = math.max(tonumber(nth[2]) + gwin - now, 1) else gwait = 1 end
  end
  if bwait >= gwait then status, wait = 1, bwait else status, wait = 4, gwait end
end
local reset_in = 0
if limit ~= nil and reset_at ~= nil then reset_in = math.max(reset_at - now, 0) end
return {status, math.ceil(wait), bid, win, math.floor(est), served, need_b, need_g, lease_b, lease_g,
        math.floor(reset_in), limit or -1, confirmed}
"""

#: KEYS: route map, global block, invalid counts.
#: ARGV: now ('' = TIME), route key, major, bucket prefix, used bucket id ('' = none), window number, token
#: (the member to remove from the in-flight set), status, limit ('' = no rate-limit headers), remaining,
#: reset-after ms, bucket hash ('' = none), scope, retry-after ms, global (0/1), guard window ms, keep ms,
#: count as invalid (0/1), ms since the response arrived (its reset and retry-after count from then).
#: Reply: the invalid-request estimate after this response.
UPDATE = _PRELUDE + """
local now = clock(ARGV[1])
local route, major, prefix, used = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local status = tonumber(ARGV[8])
local keep = tonumber(ARGV[17])
local age = tonumber(ARGV[19]) or 0

if used ~= '' and ARGV[7] ~= '' then
  redis.call('ZREM', prefix .. used .. ':inflight', ARGV[7])
end

local bid = used
local hash = ARGV[12]
if hash ~= '' then
  if redis.call('HGET', KEYS[1], route) ~= hash then
    redis.call('HSET', KEYS[1], route, hash)
  end
  bid = hash .. ':' .. major
end

if bid ~= '' then
  local bkey = prefix .. bid
  if ARGV[9] ~= '' and status ~= 429 then
    local L, rem, ra = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
    local reset_h = now + ra - age
    local b = redis.call('HMGET', bkey, 'limit', 'remaining', 'reset_at', 'win', 'confirmed', 'window')
    local cur_rem, cur_reset, cur_win = tonumber(b[2]), tonumber(b[3]), tonumber(b[4]) or 0
    local window = math.max(tonumber(b[6]) or 0, ra)
    local stale = b[1] ~= false and bid == used and tonumber(ARGV[6]) < cur_win
    if (b[1] == false or cur_reset == nil or cur_reset <= now) and not stale then
      -- no live window: the server's view starts one, minus what is still in flight or leased
      redis.call('ZREMRANGEBYSCORE', bkey .. ':inflight', '-inf', now)
      local inflight = redis.call('ZCARD', bkey .. ':inflight')
      if hash ~= '' then inflight = inflight + provisional(prefix, route, major, now) end
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.max(rem - inflight, 0), 'reset_at', reset_h,
                 'win', cur_win + 1, 'confirmed', 1, 'window', window)
    elseif stale then
      -- an answer from an older window (it came back late): it may not refill anything, and the
      -- window it was counted in may outlast the one Redis tracks now, which must not end first
      redis.call('HSET', bkey, 'limit', L, 'window', window)
      if reset_h > (cur_reset or 0) and reset_h > now then
        if cur_reset == nil or cur_reset <= now then redis.call('HSET', bkey, 'remaining', 0) end
        redis.call('HSET', bkey, 'reset_at', reset_h)
      end
    elseif bid == used and tonumber(ARGV[6]) == cur_win then
      -- same window: the lower remaining wins; the first answer replaces a provisional reset
      local new_reset = reset_h
      if b[5] == '1' then new_reset = math.max(cur_reset, reset_h) end
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.min(cur_rem or rem, rem), 'reset_at', new_reset,
                 'confirmed', 1, 'window', window)
    elseif bid ~= used then
      -- a hash just learned whose bucket another process already tracks: merge conservatively
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.min(cur_rem or rem, rem),
                 'reset_at', math.max(cur_reset, reset_h), 'window', window)
    end
    redis.call('PEXPIRE', bkey, math.ceil(math.max(reset_h - now, 0) + keep))
  end
end

if status == 429 then
  local ra = math.max(tonumber(ARGV[14]) - age, 1)
  local until_ms = now + ra
  if ARGV[15] == '1' or ARGV[13] == 'global' then
    local cur = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if until_ms > cur then
      redis.call('SET', KEYS[2], until_ms, 'PX', math.ceil(ra) + 1)
    end
  else
    if bid == '' then bid = 'r:' .. route .. ':' .. major end
    local bkey = prefix .. bid
    local cur = tonumber(redis.call('HGET', bkey, 'blocked') or '0') or 0
    redis.call('HSET', bkey, 'blocked', math.max(cur, until_ms), 'remaining', 0)
    redis.call('PEXPIRE', bkey, math.ceil(ra + keep))
  end
end

local gw = tonumber(ARGV[16])
if ARGV[18] == '1' then
  local widx = math.floor(now / gw)
  redis.call('HINCRBY', KEYS[3], tostring(widx), 1)
  redis.call('HDEL', KEYS[3], tostring(widx - 2))
  redis.call('PEXPIRE', KEYS[3], math.ceil(gw * 2))
end
local est = guard_estimate(KEYS[3], gw, now)
return math.floor(est)
"""

#: KEYS: global log.
#: ARGV: now ('' = TIME), bucket prefix, then operations of six fields each: kind, bucket id, lease id,
#: first index, count, window number. Kinds:
#: ``r`` the global slots ``<lease>:g<first…>`` were used: lower their stamps to now (never raise them);
#: ``d`` they went unused: remove them;
#: ``b`` the bucket tokens ``<lease>:b<first…>`` are done (answered or failed): remove them from in-flight;
#: ``u`` they went unused: remove them and give them back to the bucket if its window is still that number.
#: Reply: the number of members removed or restamped.
SETTLE = _PRELUDE + """
local now = clock(ARGV[1])
local prefix = ARGV[2]
local done = 0
for i = 3, #ARGV, 6 do
  local kind, bid, lid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first, count = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  if count < 1 then
    -- nothing to settle
  elseif kind == 'r' then
    for _, m in ipairs(members(lid, 'g', first, count)) do
      done = done + redis.call('ZADD', KEYS[1], 'XX', 'LT', 'CH', now, m)
    end
  elseif kind == 'd' then
    done = done + redis.call('ZREM', KEYS[1], unpack(members(lid, 'g', first, count)))
  else
    local bkey = prefix .. bid
    local removed = redis.call('ZREM', bkey .. ':inflight', unpack(members(lid, 'b', first, count)))
    done = done + removed
    if kind == 'u' and removed > 0 then
      local b = redis.call('HMGET', bkey, 'limit', 'remaining', 'win', 'blocked', 'reset_at')
      local limit, rem = tonumber(b[1]), tonumber(b[2])
      if limit ~= nil and rem ~= nil and tonumber(b[3]) == tonumber(ARGV[i + 5])
          and (tonumber(b[4]) or 0) <= now and (tonumber(b[5]) or 0) > now then
        redis.call('HSET', bkey, 'remaining', math.min(limit, rem + removed))
      end
    end
  end
end
return done
"""

#: ``SHA1`` of each script, for ``EVALSHA`` inside a pipeline (loaded on ``NOSCRIPT``).
SHAS = {name: hashlib.sha1(src.encode(), usedforsecurity=False).hexdigest()
        for name, src in (("claim", CLAIM), ("update", UPDATE), ("settle", SETTLE))}
