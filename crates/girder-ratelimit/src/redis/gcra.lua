-- Port of gcra.rs. State: "tat_ms tat_rem" (TAT = tat_ms + tat_rem / limit).
local function decide(key, cost, now)
  local tau = burst * period
  local tat, rem = now, 0
  local v = redis.call('GET', key)
  if v then tat, rem = two(v) end
  local floor_now = tat - cdiv(tau, limit)
  if now < floor_now then now = floor_now end
  local bms, brem = tat, rem
  if tat < now then bms = now; brem = 0 end
  local total = brem + cost * period
  local nms = bms + math.floor(total / limit)
  local nrem = total % limit
  local ahead = (nms - now) * limit + nrem
  local allowed, retry, debt = 0, 0, 0
  if ahead <= tau then
    allowed = 1
    debt = ahead
    save(key, string.format('%d %d', nms, nrem), cdiv(ahead, limit))
  else
    retry = cdiv(ahead - tau, limit)
    debt = (bms - now) * limit + brem
  end
  local remaining = 0
  if tau > debt then remaining = math.floor((tau - debt) / period) end
  return allowed, remaining, retry, cdiv(debt, limit), burst, now
end
