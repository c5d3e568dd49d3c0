-- The shared counter of a batched limiter's window. KEYS[1]: the window's counter.
-- ARGV: add, limit, mode ('sync': add unconditionally; 'admit': add only if it fits),
-- pexpire_ms. Returns {added (0/1), total after}.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local add = tonumber(ARGV[1])
if ARGV[3] == 'admit' and cur + add > tonumber(ARGV[2]) then return {0, cur} end
if add > 0 then
  cur = redis.call('INCRBY', KEYS[1], add)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return {1, cur}
