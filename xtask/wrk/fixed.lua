-- GET the same path every time (for the bare-handler baseline).
function request()
  return wrk.format("GET", "/0000000")
end
