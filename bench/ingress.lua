-- wrk script of bench/ingress.py: signed GitHub push deliveries, each one different.
--
-- wrk's Lua has no HMAC, so bench/ingress.py prepares everything: DATA_DIR/template holds the
-- body's JSON text cut at its variable fields (pieces separated by byte 0x01, then a line of
-- the order in which the fields fill the gaps), DATA_DIR/requests one line per delivery:
-- delivery id, signature, then the field values, tab-separated. Thread k of n takes lines
-- k, k+n, k+2n, ...; each request is the next of its thread's lines. A thread that runs out
-- sends GET /system/ping instead and counts it ("exhausted"): the bench then fails, since
-- the figures would include requests that are not webhooks.
--
-- Every answer is appended to DATA_DIR/answers-<k> as "<status>\t<body>", so the bench can
-- check each answer and that each answered delivery is recorded. done() prints wrk's figures
-- as one line "WRK_RESULT <json>".
--
-- Usage: wrk -s bench/ingress.lua URL -- DATA_DIR

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local function split(text, separator)
   local parts = {}
   local start = 1
   while true do
      local stop = string.find(text, separator, start, true)
      if stop == nil then
         table.insert(parts, string.sub(text, start))
         return parts
      end
      table.insert(parts, string.sub(text, start, stop - 1))
      start = stop + #separator
   end
end

local pieces, order, lines, answers
local position = 0
exhausted = 0

function init(args)
   local dir = args[1]
   local file = assert(io.open(dir .. "/template", "rb"))
   local template = file:read("*a")
   file:close()
   local cut = string.find(template, "\n", 1, true)
   order = {}
   for _, value in ipairs(split(string.sub(template, 1, cut - 1), ",")) do
      table.insert(order, tonumber(value))
   end
   pieces = split(string.sub(template, cut + 1), "\1")
   local stride = tonumber(args[2])
   lines = {}
   local n = 0
   for line in io.lines(dir .. "/requests") do
      if n % stride == index then
         table.insert(lines, line)
      end
      n = n + 1
   end
   answers = assert(io.open(dir .. "/answers-" .. index, "wb"))
end

function request()
   position = position + 1
   local line = lines[position]
   if line == nil then
      exhausted = exhausted + 1
      return wrk.format("GET", "/system/ping")
   end
   local fields = split(line, "\t")
   local body = { pieces[1] }
   for i, field in ipairs(order) do
      body[2 * i] = fields[field + 3]
      body[2 * i + 1] = pieces[i + 1]
   end
   return wrk.format("POST", "/v1/github/events", {
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = fields[1],
      ["X-Hub-Signature-256"] = fields[2],
   }, table.concat(body))
end

function response(status, headers, body)
   answers:write(status, "\t", string.gsub(body, "[\r\n]", " "), "\n")
   answers:flush()
end

function done(summary, latency, requests)
   local spent = 0
   for _, thread in ipairs(threads) do
      spent = spent + (thread:get("exhausted") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"duration_us": %d, "requests": %d, "bytes": %d,'
         .. ' "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d},'
         .. ' "exhausted": %d, "latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d,'
         .. ' "p999": %d, "max": %d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout, spent,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max))
end
