-- POST /orders for wrk (bench/wrk.py runs it): every request its own idempotency key,
-- answers counted by status, the result written as JSON for the benchmark to read.
-- Settings come from the environment: WRK_BODY (the JSON body), WRK_PATH (default
-- /orders), WRK_KEY_HEADER (default X-Idempotency-Key), WRK_KEY_PREFIX, WRK_RESULT (where
-- done() writes). wrk gives each thread its own Lua state, so a key is
-- prefix-thread-n and each thread counts its own answers; done() adds them up.

local threads = {}
local made = 0

function setup(thread)
  made = made + 1
  thread:set("tid", made)
  table.insert(threads, thread)
end

function init(args)
  prefix = (os.getenv("WRK_KEY_PREFIX") or "wrk") .. "-" .. tid .. "-"
  body = os.getenv("WRK_BODY") or "{}"
  path = os.getenv("WRK_PATH") or "/orders"
  key_header = os.getenv("WRK_KEY_HEADER") or "X-Idempotency-Key"
  sent = 0
  statuses = {}
end

function request()
  sent = sent + 1
  local headers = { ["Content-Type"] = "application/json" }
  headers[key_header] = prefix .. sent
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total, sent_total = {}, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + (thread:get("sent") or 0)
    for status, n in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("WRK_RESULT"), "w"))
  out:write(string.format(
    '{"seconds":%.6f,"requests":%d,"sent":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"p50_s":%.6f,"p99_s":%.6f}\n',
    summary.duration / 1e6, summary.requests, sent_total, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6))
  out:close()
end
