-- Port of token_bucket.rs. State: "level_units last_ms".
local function decide(key, cost, now)
  local cap = burst * period
  local level, last = cap, now
  local v = redis.call('GET', key)
  if v then level, last = two(v) end
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
  if allowed == 1 then save(key, string.format('%d %d', level, now), reset) end
  return allowed, math.floor(level / period), retry, reset, burst, now
end
