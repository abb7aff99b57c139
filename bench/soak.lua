-- wrk script for bench/soak.py: visitors who view a personalised page and some of whom convert.
--
--   wrk -t1 -s soak.lua URL -- RATE STOP_AFTER_S PAGE GOAL CONVERT_EVERY HOST
--
-- Each new visitor views PAGE without a cookie (Kairos assigns an arm, counts an exposure and
-- a page view, and sends Set-Cookie kairos_v=...). Every CONVERT_EVERY-th of them then views
-- GOAL with that cookie (a page goal of the experiment: one conversion, one page view). The
-- cookie is taken from the page's response; a response of GOAL is recognised by the marker
-- "kb-thanks" in its body (its Set-Cookie, the visitor's updated cookie, is not reused).
--
-- Pacing (plain wrk has no rate limit; wrk2 is not installed): delay() gives each request a
-- slot on a fixed schedule, START + n / RATE, across all connections of the thread, and
-- waits until it (clock_gettime through LuaJIT's ffi). RATE 0: as fast as possible. After
-- STOP_AFTER_S seconds no request is started any more (delay() returns a long wait), so
-- when wrk stops at -d every request sent has been answered: Kairos has counted exactly
-- what was sent. Use one thread (-t1): the schedule is per thread.
--
-- done() prints one line that bench/soak.py parses:
--   SOAK pages=<sent> goals=<sent> answered=<n> s2xx=<n> s3xx=<n> s4xx=<n> s5xx=<n>

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } kb_timespec;
  int clock_gettime(int clk_id, kb_timespec *tp);
]]
local ts = ffi.new("kb_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local rate, stop_after, page, goal, every, host = 0, 1e9, "/", "/", 2, "localhost"
local start, slot = nil, 0
local cookies, visitors = {}, 0
pages, goals, answered, s2xx, s3xx, s4xx, s5xx = 0, 0, 0, 0, 0, 0, 0

function init(args)
  rate = tonumber(args[1] or "0") or 0
  stop_after = (tonumber(args[2] or "0") or 0) * 1000
  if stop_after <= 0 then stop_after = 1e12 end
  page = args[3] or "/"
  goal = args[4] or "/"
  every = tonumber(args[5] or "2") or 2
  host = args[6] or "localhost"
end

function delay()
  local now = now_ms()
  if start == nil then start = now end
  if now - start >= stop_after then
    return 3600 * 1000   -- the soak is over: start nothing new
  end
  if rate <= 0 then return 0 end
  local due = start + slot * 1000 / rate
  slot = slot + 1
  if due <= now then return 0 end
  return math.floor(due - now)
end

local common = "Host: %s\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 " ..
  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nAccept: text/html,application/" ..
  "xhtml+xml,*/*;q=0.8\r\nSec-Fetch-Dest: document\r\nAccept-Language: en-GB,en;q=0.8\r\n"

function request()
  if start == nil then
    -- Not a request: wrk calls request() once before the run to see how many requests it
    -- returns (script_verify_request); every real one comes after a delay().
    return "GET " .. page .. " HTTP/1.1\r\n" .. string.format(common, host) .. "\r\n"
  end
  local cookie = table.remove(cookies)
  if cookie ~= nil then
    goals = goals + 1
    return "GET " .. goal .. " HTTP/1.1\r\n" .. string.format(common, host) ..
      "Cookie: " .. cookie .. "\r\n\r\n"
  end
  pages = pages + 1
  return "GET " .. page .. " HTTP/1.1\r\n" .. string.format(common, host) .. "\r\n"
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 500 then s5xx = s5xx + 1
  elseif status >= 400 then s4xx = s4xx + 1
  elseif status >= 300 then s3xx = s3xx + 1
  else s2xx = s2xx + 1 end
  if status ~= 200 or string.find(body, "kb-thanks", 1, true) then return end
  local set = headers["Set-Cookie"] or headers["set-cookie"]
  if set == nil then return end
  local value = string.match(set, "(kairos_v=[^;]+)")
  if value == nil then return end
  visitors = visitors + 1
  if visitors % every == 0 then table.insert(cookies, value) end
end

function done(summary, latency, requests)
  local t = {pages = 0, goals = 0, answered = 0, s2xx = 0, s3xx = 0, s4xx = 0, s5xx = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(t) do
      t[name] = t[name] + (thread:get(name) or 0)
    end
  end
  io.write(string.format("SOAK pages=%d goals=%d answered=%d s2xx=%d s3xx=%d s4xx=%d s5xx=%d\n",
    t.pages, t.goals, t.answered, t.s2xx, t.s3xx, t.s4xx, t.s5xx))
end
