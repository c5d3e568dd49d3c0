-- Shared by every rate-limit script. KEYS[1]: the key's state.
-- ARGV: now_ms override ('' = the server's TIME), cost, limit, period_ms, burst,
-- grace_ms (added to PEXPIRE; 0 except in tests that override time).
-- Every number stays below 2^51 (validated by Rule), so doubles are exact integers.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local grace = tonumber(ARGV[6])
local function cdiv(a, b) return math.floor((a + b - 1) / b) end
local function fmt(...)
  local parts = {}
  for i, v in ipairs({...}) do parts[i] = string.format('%d', v) end
  return table.concat(parts, ' ')
end
local function nums(v)
  local out = {}
  for x in string.gmatch(v, '%d+') do out[#out + 1] = tonumber(x) end
  return out
end
local function save(value, ttl) redis.call('SET', KEYS[1], value, 'PX', ttl + grace) end
