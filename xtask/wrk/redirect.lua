-- GET /{code} for codes of ids drawn uniformly from [0, N), N = first argument.
-- Codes are sequential: base62 of the id, zero-padded to 7 characters.
--
-- Every path is built once in init(), so request() costs the load generator the
-- same tiny amount whatever server it drives: the bare baseline handler and girder
-- are measured with this same script, and wrk (which shares the machine's cores
-- with the server) does the same work for each.
local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local paths = {}
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
  for id = 0, n - 1 do
    paths[id + 1] = wrk.format("GET", "/" .. code(id))
  end
end

function request()
  return paths[math.random(1, n)]
end
