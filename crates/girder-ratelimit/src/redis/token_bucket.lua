-- Port of token_bucket.rs. State: "level_units last_ms".
local cap = burst * period
local level, last = cap, now
local v = redis.call('GET', KEYS[1])
if v then local s = nums(v); level = s[1]; last = s[2] end
if now < last then now = last end
local missing = cap - level
local elapsed = now - last
if elapsed >= cdiv(missing, limit) then level = cap else level = level + elapsed * limit end
local need = cost * period
local allowed, retry = 0, 0
if level >= need then
  level = level - need
  allowed = 1
else
  retry = cdiv(need - level, limit)
end
local reset = cdiv(cap - level, limit)
-- A denial changes nothing that matters (refill is linear below the cap): no write.
if allowed == 1 then save(fmt(level, now), reset) end
return {allowed, math.floor(level / period), retry, reset, burst, now}
