-- wrk script for bench/personalised.py: replay pre-built page views, each from a new address.
--
--   wrk -s personalised.lua URL -- REQUESTS_FILE START [xff|noxff]
--
-- REQUESTS_FILE holds raw HTTP/1.1 request heads separated by NUL bytes, each WITHOUT the
-- blank line that ends it (the script adds X-Forwarded-For and the blank line). They are
-- sent in turn, from START (modulo their count), so a series of runs can continue where the
-- last one stopped. The Python script writes them: paths, User-Agents, Accept-Language,
-- Referer, Accept-Encoding and cookies are chosen there, with a fixed seed.
--
-- X-Forwarded-For: request n comes from a.b.c.d with a taken in turn from public first
-- octets and b.c from n, so consecutive requests never share a /24 network (3 million of
-- them before one repeats): every request misses Kairos's per-/24 geo cache. Kairos trusts
-- 127.0.0.1 as a proxy, so that is the visitor's address; nginx ignores the header.

local heads, count, i, n = {}, 0, 0, 0
local xff = true
local octets = {
  2, 5, 24, 31, 37, 41, 46, 49, 50, 58, 62, 63, 64, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
  76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98,
  99, 101, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
  119, 120, 121, 122, 123, 124, 125, 128, 129, 130, 131, 132, 134, 136, 137, 138, 139, 140,
  141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158,
  159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 171, 173, 174, 175, 176, 177, 178, 179,
  180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 193, 194, 195, 196, 197, 199, 200,
  201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218,
  219, 220, 221, 222, 223,
}
local k = #octets

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local stop = string.find(data, "\0", pos, true) or (#data + 1)
    if stop > pos then
      count = count + 1
      heads[count] = string.sub(data, pos, stop - 1)
    end
    pos = stop + 1
  end
  assert(count > 0, "no requests in " .. args[1])
  n = tonumber(args[2] or "0") or 0
  i = n % count
  xff = (args[3] or "xff") == "xff"
end

function request()
  i = i + 1
  if i > count then i = 1 end
  n = n + 1
  if not xff then
    return heads[i] .. "\r\n"
  end
  local a = octets[n % k + 1]
  local m = math.floor(n / k)
  local ip = a .. "." .. (math.floor(m / 256) % 256) .. "." .. (m % 256) .. "." .. (n % 254 + 1)
  return heads[i] .. "X-Forwarded-For: " .. ip .. "\r\n\r\n"
end
