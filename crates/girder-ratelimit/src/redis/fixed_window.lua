-- Port of fixed_window.rs. State: "window_start_ms count".
local ws, count = now - now % period, 0
local v = redis.call('GET', KEYS[1])
if v then local s = nums(v); ws = s[1]; count = s[2] end
if now < ws then now = ws end
local start = now - now % period
if start ~= ws then ws = start; count = 0 end
local to_end = start + period - now
local allowed, retry = 0, 0
if count + cost <= limit then
  count = count + cost
  allowed = 1
  save(fmt(ws, count), to_end)
else
  retry = to_end
end
local reset = 0
if count > 0 then reset = to_end end
return {allowed, limit - count, retry, reset, limit, now}
