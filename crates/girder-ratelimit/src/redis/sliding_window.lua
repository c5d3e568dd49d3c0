-- Port of sliding_window.rs. State: "window_start_ms previous current".
local function decide(key, cost, now)
  local ws, prev, cur = now - now % period, 0, 0
  local v = redis.call('GET', key)
  if v then ws, prev, cur = three(v) end
  if now < ws then now = ws end
  local start = now - now % period
  if start == ws + period then
    prev = cur; cur = 0; ws = start
  elseif start ~= ws then
    prev = 0; cur = 0; ws = start
  end
  local e = now - start
  local weighted = prev * (period - e)
  local allowed, retry = 0, 0
  if cur + cost <= limit and weighted <= (limit - cur - cost) * period then
    allowed = 1
    cur = cur + cost
  elseif cur + cost <= limit then
    retry = period - math.floor((limit - cur - cost) * period / prev) - e
  else
    local w = period - math.floor((limit - cost) * period / cur)
    if w < 0 then w = 0 end
    retry = (period - e) + w
  end
  local to_end = period - e
  local reset = 0
  if cur > 0 then reset = to_end + period elseif prev > 0 then reset = to_end end
  if allowed == 1 then save(key, string.format('%d %d %d', ws, prev, cur), reset) end
  local remaining = limit - cur - cdiv(weighted, period)
  if remaining < 0 then remaining = 0 end
  return allowed, remaining, retry, reset, limit, now
end
