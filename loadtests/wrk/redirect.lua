-- wrk script: GET /{code} over a list of short codes, round robin, each wrk
-- thread starting at a different place in the list.
--   wrk ... -s redirect.lua URL -- CODES_FILE
-- CODES_FILE has one short code per line. The requests are built once, in
-- init(), so the per-request cost in wrk is a table lookup.
-- Each request carries what a browser's click does (a desktop Chrome's
-- User-Agent and a Referer), so the service does the work a real click costs
-- it (the bot check, the visitor hash, the analytics); VISITOR=none sends
-- neither, as wrk does by itself.

local requests = {}
local n = 0
local i = 0

function init(args)
  local file = args[1]
  if not file then
    error("usage: wrk ... -s redirect.lua URL -- CODES_FILE")
  end
  local headers = {}
  if os.getenv("VISITOR") ~= "none" then
    headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      .. "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    headers["Referer"] = "https://news.example.com/item?id=1"
  end
  for line in io.lines(file) do
    local code = line:match("^%s*(%S+)%s*$")
    if code then
      n = n + 1
      requests[n] = wrk.format("GET", "/" .. code, headers)
    end
  end
  if n == 0 then
    error("no short codes in " .. file)
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return requests[i]
end
