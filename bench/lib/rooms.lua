-- wrk script: spreads GET requests over 1,000 room ids in the query string (?room=room-N).
-- Requests are formatted once per thread in init(), so wrk spends no time building them.
local requests = {}
local count = 0
local i = 0

function init(args)
  local rooms = tonumber(args[1]) or 1000
  for r = 0, rooms - 1 do
    requests[r + 1] = wrk.format("GET", "/api/state?room=room-" .. r)
  end
  count = rooms
  i = math.random(0, rooms - 1)
end

function request()
  i = i % count + 1
  return requests[i]
end
