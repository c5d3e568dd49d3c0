-- Runs `decide` for every key, in order; six numbers per decision.
local out = {}
for i = 1, #KEYS do
  local a, r, retry, reset, lim, at = decide(KEYS[i], tonumber(ARGV[5 + i]), now0)
  local n = #out
  out[n + 1] = a; out[n + 2] = r; out[n + 3] = retry
  out[n + 4] = reset; out[n + 5] = lim; out[n + 6] = at
end
return out
