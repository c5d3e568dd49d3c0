-- Port of sliding_log.rs. State: a list of "time_ms cost", oldest first, one entry
-- per millisecond. Cost O(entries) = O(min(limit, period_ms)) per call.
local function decide(key, cost, now)
  local raw = redis.call('LRANGE', key, 0, -1)
  local ts, cs, total = {}, {}, 0
  for i = 1, #raw do
    ts[i], cs[i] = two(raw[i]); total = total + cs[i]
  end
  local n = #ts
  if n > 0 and now < ts[n] then now = ts[n] end
  local first = 1
  while first <= n and ts[first] + period <= now do
    total = total - cs[first]
    first = first + 1
  end
  if first > 1 then redis.call('LTRIM', key, first - 1, -1) end
  local allowed, retry = 0, 0
  if total + cost <= limit then
    allowed = 1
    total = total + cost
    if first <= n and ts[n] == now then
      cs[n] = cs[n] + cost
      redis.call('LSET', key, -1, string.format('%d %d', now, cs[n]))
    else
      n = n + 1; ts[n] = now; cs[n] = cost
      redis.call('RPUSH', key, string.format('%d %d', now, cost))
    end
  else
    local need = total + cost - limit
    local freed = 0
    for i = first, n do
      freed = freed + cs[i]
      if freed >= need then retry = ts[i] + period - now; break end
    end
  end
  local reset = 0
  if first <= n then reset = ts[n] + period - now end
  if allowed == 1 then redis.call('PEXPIRE', key, reset + grace) end
  return allowed, limit - total, retry, reset, limit, now
end
