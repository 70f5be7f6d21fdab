"""The two Lua scripts behind :mod:`ipc.ratelimit`: take a token, and record a response.

Both run atomically inside Redis and read the clock with ``TIME``, so every process agrees on
"now". Times are milliseconds (floats).

State per bucket (hash ``rl:bucket:<id>``, id = ``<discord hash>:<major params>``, or
``r:<route key>:<major params>`` until the hash is known):

``limit``, ``remaining``
    From ``X-RateLimit-Limit`` / ``-Remaining``; ``remaining`` counts down as tokens are taken.
``reset_at``
    When the current window ends: response time + ``X-RateLimit-Reset-After``, so the server's
    clock wins. A window we open ourselves (the old one ended) gets a provisional end, replaced by
    the first response of that window (``confirmed``).
``win``
    The window number; a response carrying an older number is stale and cannot refill a bucket.
``window``
    The longest ``Reset-After`` seen: the provisional length of a new window.
``blocked``
    Until when a 429 (scope user or shared) blocks the bucket.

Beside it, ``rl:bucket:<id>:inflight`` (sorted set, score = deadline) holds requests taken and not
yet answered. A new window starts with ``limit - inflight`` tokens, as discord.py's own ``Ratelimit``
does with ``outgoing``. While a bucket's limit is unknown, one request at a time probes it.

The global limit is a sliding log (``rl:global``): at most ``global_limit`` sends in any window of
``global_window`` ms, the strictest reading of "50 per second", which also satisfies fixed-window
and token-bucket servers. A global 429 sets ``rl:global:block``.

The scripts build bucket key names from a prefix passed in ``ARGV`` (the bucket id is only known
inside the script, from the shared route map), so they suit a single Redis or Sentinel, not Redis
Cluster.

The invalid-request guard counts 401/403/429 (not ``shared`` 429s) per fixed window in a hash
(``rl:invalid``, field = window number) and estimates the sliding count as
``current + previous * (1 - elapsed/window)``.
"""

from __future__ import annotations

__all__ = ("ACQUIRE", "UPDATE", "TAKEN", "WAIT_BUCKET", "REFUSED", "GUARD_DELAY", "WAIT_GLOBAL")

#: Statuses returned by :data:`ACQUIRE` (first element of its reply).
TAKEN, WAIT_BUCKET, REFUSED, GUARD_DELAY, WAIT_GLOBAL = 0, 1, 2, 3, 4

_GUARD = """
local function guard_estimate(key, gw, now)
  local widx = math.floor(now / gw)
  local counts = redis.call('HMGET', key, tostring(widx), tostring(widx - 1))
  local cur = tonumber(counts[1]) or 0
  local prev = tonumber(counts[2]) or 0
  local elapsed = now - widx * gw
  return cur + prev * (1 - elapsed / gw), cur, prev, elapsed
end
"""

#: KEYS: route map, global log, global block, invalid counts.
#: ARGV: route key, major, bucket prefix, token, global exempt (0/1), global limit, global window ms,
#: inflight ttl ms, guard soft, guard hard, guard window ms, guard max delay ms, guard delay served (0/1),
#: probe poll ms, keep ms, bucket exempt (0/1), guard exempt (0/1: never delayed or refused by the guard).
#: Reply: {status, wait ms, bucket id, window number, invalid estimate}.
ACQUIRE = _GUARD + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

local gw = tonumber(ARGV[11])
local est, cur, prev, elapsed = guard_estimate(KEYS[4], gw, now)
local soft, hard = tonumber(ARGV[9]), tonumber(ARGV[10])
if ARGV[17] ~= '1' then
  if est >= hard then
    local wait
    if cur >= hard then
      wait = (gw - elapsed) + gw * (1 - hard / cur)
    else
      wait = gw * (1 - (hard - cur) / prev) - elapsed
    end
    return {2, math.ceil(math.max(wait, 1)), '', 0, math.floor(est)}
  end
  if est > soft and ARGV[13] == '0' then
    local delay = tonumber(ARGV[12]) * (est - soft) / (hard - soft)
    if delay >= 1 then
      return {3, math.ceil(delay), '', 0, math.floor(est)}
    end
  end
end

local route, major, prefix, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keep = tonumber(ARGV[15])
local bid, bkey, ikey = '', nil, nil
local limit, remaining, reset_at, win = nil, nil, nil, 0
local bwait = 0
if ARGV[16] == '0' then
  local hash = redis.call('HGET', KEYS[1], route)
  if hash then bid = hash .. ':' .. major else bid = 'r:' .. route .. ':' .. major end
  bkey = prefix .. bid
  ikey = bkey .. ':inflight'
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now)
  local b = redis.call('HMGET', bkey, 'limit', 'remaining', 'reset_at', 'blocked', 'win', 'window')
  limit, remaining, reset_at = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
  local blocked = tonumber(b[4]) or 0
  win = tonumber(b[5]) or 0
  local window = math.max(tonumber(b[6]) or 0, 1)
  if blocked > now then
    bwait = blocked - now
  elseif limit == nil then
    if redis.call('ZCARD', ikey) > 0 then bwait = tonumber(ARGV[14]) end
  else
    if reset_at == nil or reset_at <= now then
      remaining = limit - redis.call('ZCARD', ikey)
      reset_at = now + window
      win = win + 1
      redis.call('HSET', bkey, 'remaining', remaining, 'reset_at', reset_at, 'win', win, 'confirmed', 0)
      redis.call('PEXPIRE', bkey, math.ceil(window + keep))
    end
    if remaining <= 0 then bwait = math.max(reset_at - now, 1) end
  end
end

local gwait = 0
local gwin = tonumber(ARGV[7])
if ARGV[5] == '0' then
  local gblock = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
  if gblock > now then
    gwait = gblock - now
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - gwin)
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
      local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      gwait = math.max(tonumber(oldest[2]) + gwin - now, 1)
    end
  end
end

if bwait > 0 or gwait > 0 then
  if bwait >= gwait then
    return {1, math.ceil(bwait), bid, win, math.floor(est)}
  end
  return {4, math.ceil(gwait), bid, win, math.floor(est)}
end

if ARGV[5] == '0' then
  redis.call('ZADD', KEYS[2], now, token)
  redis.call('PEXPIRE', KEYS[2], math.ceil(gwin * 2))
end
if bkey then
  local ttl = tonumber(ARGV[8])
  redis.call('ZADD', ikey, now + ttl, token)
  redis.call('PEXPIRE', ikey, math.ceil(ttl * 2))
  if limit ~= nil then
    redis.call('HINCRBY', bkey, 'remaining', -1)
  end
end
return {0, 0, bid, win, math.floor(est)}
"""

#: KEYS: route map, global block, invalid counts.
#: ARGV: route key, major, bucket prefix, used bucket id ('' = none), window number, token, status,
#: limit ('' = no rate-limit headers), remaining, reset-after ms, bucket hash ('' = none), scope,
#: retry-after ms, global (0/1), guard window ms, keep ms, count as invalid (0/1).
#: Reply: the invalid-request estimate after this response.
UPDATE = _GUARD + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local route, major, prefix, used = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local status = tonumber(ARGV[7])
local keep = tonumber(ARGV[16])

if used ~= '' then
  redis.call('ZREM', prefix .. used .. ':inflight', ARGV[6])
end

local bid = used
local hash = ARGV[11]
if hash ~= '' then
  if redis.call('HGET', KEYS[1], route) ~= hash then
    redis.call('HSET', KEYS[1], route, hash)
  end
  bid = hash .. ':' .. major
end

if bid ~= '' then
  local bkey = prefix .. bid
  if ARGV[8] ~= '' and status ~= 429 then
    local L, rem, ra = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
    local reset_h = now + ra
    local b = redis.call('HMGET', bkey, 'limit', 'remaining', 'reset_at', 'win', 'confirmed', 'window')
    local cur_rem, cur_reset, cur_win = tonumber(b[2]), tonumber(b[3]), tonumber(b[4]) or 0
    local window = math.max(tonumber(b[6]) or 0, ra)
    if b[1] == false or cur_reset == nil or cur_reset <= now then
      -- no live window: the server's view starts one, minus what is still in flight
      redis.call('ZREMRANGEBYSCORE', bkey .. ':inflight', '-inf', now)
      local inflight = redis.call('ZCARD', bkey .. ':inflight')
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.max(rem - inflight, 0), 'reset_at', reset_h,
                 'win', cur_win + 1, 'confirmed', 1, 'window', window)
    elseif bid == used and tonumber(ARGV[5]) == cur_win then
      -- same window: the lower remaining wins; the first answer replaces a provisional reset
      local new_reset = reset_h
      if b[5] == '1' then new_reset = math.max(cur_reset, reset_h) end
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.min(cur_rem or rem, rem), 'reset_at', new_reset,
                 'confirmed', 1, 'window', window)
    elseif bid ~= used then
      -- a hash just learned whose bucket another process already tracks: merge conservatively
      redis.call('HSET', bkey, 'limit', L, 'remaining', math.min(cur_rem or rem, rem),
                 'reset_at', math.max(cur_reset, reset_h), 'window', window)
    else
      -- an answer from an older window: it may not refill anything
      redis.call('HSET', bkey, 'limit', L, 'window', window)
    end
    redis.call('PEXPIRE', bkey, math.ceil(math.max(reset_h - now, 0) + keep))
  end
end

if status == 429 then
  local ra = math.max(tonumber(ARGV[13]), 1)
  local until_ms = now + ra
  if ARGV[14] == '1' or ARGV[12] == 'global' then
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

local gw = tonumber(ARGV[15])
if ARGV[17] == '1' then
  local widx = math.floor(now / gw)
  redis.call('HINCRBY', KEYS[3], tostring(widx), 1)
  redis.call('HDEL', KEYS[3], tostring(widx - 2))
  redis.call('PEXPIRE', KEYS[3], math.ceil(gw * 2))
end
local est = guard_estimate(KEYS[3], gw, now)
return math.floor(est)
"""
