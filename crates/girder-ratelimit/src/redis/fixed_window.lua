-- Port of fixed_window.rs. State: "window_start_ms count".
local function decide(key, cost, now)
  local ws, count = now - now % period, 0
  local v = redis.call('GET', key)
  if v then ws, count = two(v) end
  if now < ws then now = ws end
  local start = now - now % period
  if start ~= ws then ws = start; count = 0 end
  local to_end = start + period - now
  local allowed, retry = 0, 0
  if count + cost <= limit then
    count = count + cost
    allowed = 1
    save(key, string.format('%d %d', ws, count), to_end)
  else
    retry = to_end
  end
  local reset = 0
  if count > 0 then reset = to_end end
  return allowed, limit - count, retry, reset, limit, now
end
