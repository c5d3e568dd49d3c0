-- POST /api/bitly/urls with a distinct destination per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local thread_tag = tostring(math.random(1, 1e9))
local n = 0

function request()
  n = n + 1
  return wrk.format(nil, "/api/bitly/urls", nil,
    '{"url":"https://example.com/' .. thread_tag .. '/' .. n .. '"}')
end
