-- GET /{code} for codes of ids drawn uniformly from [0, N), N = first argument.
-- Codes are sequential: base62 of the id, zero-padded to 7 characters.
local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local n = 1000

local function code(id)
  local out = {}
  for i = 7, 1, -1 do
    local d = id % 62
    out[i] = alphabet:sub(d + 1, d + 1)
    id = (id - d) / 62
  end
  return table.concat(out)
end

function init(args)
  if args[1] then n = tonumber(args[1]) end
end

function request()
  return wrk.format("GET", "/" .. code(math.random(0, n - 1)))
end
