-- Shared by every rate-limit script; the algorithm's file defines
-- `decide(key, cost, now)` and `epilogue.lua` runs it once per key.
-- KEYS[i]: the state of the i-th decision. ARGV: now_ms override ('' = the server's
-- TIME), limit, period_ms, burst, grace_ms (added to PEXPIRE; 0 except in tests that
-- override time), then one cost per key. Several keys make several decisions in
-- order, at one server time, in one atomic call.
-- Every number stays below 2^51 (validated by Rule), so doubles are exact integers.
local now0
if ARGV[1] ~= '' then
  now0 = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now0 = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local function cdiv(a, b) return math.floor((a + b - 1) / b) end
-- State is integers separated by spaces, written with string.format('%d ...').
-- A value that does not parse is an error (the caller's LimitError::Backend), never
-- a silent reset of the limit.
local function two(v)
  local a, b = string.match(v, '^(%d+) (%d+)$')
  if not a then error('corrupt rate-limit state: ' .. v) end
  return tonumber(a), tonumber(b)
end
local function three(v)
  local a, b, c = string.match(v, '^(%d+) (%d+) (%d+)$')
  if not a then error('corrupt rate-limit state: ' .. v) end
  return tonumber(a), tonumber(b), tonumber(c)
end
local function save(key, value, ttl) redis.call('SET', key, value, 'PX', ttl + grace) end
