-- wrk script: POST claims, each with a fresh invoice number, spread over many pharmacies
-- and beneficiaries. Used by bench/costs.py (see there); reads, from the environment:
--   WRK_BODIES  a file of lines "<bearer key>\t<claim JSON with INV-X as the invoice number>"
--   WRK_PATH    the path to post to (default /v1/claims)
--   WRK_PREFIX  a prefix making this run's invoice numbers unique
-- and prints one line "WRK-RESULT <json>" at the end: requests, seconds, latency
-- percentiles (ms), socket errors and the count of each HTTP status.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  statuses = {}
  counter = 0
  bodies = {}
  prefix = (os.getenv("WRK_PREFIX") or "W") .. tid .. "-"
  path = os.getenv("WRK_PATH") or "/v1/claims"
  for line in io.lines(os.getenv("WRK_BODIES")) do
    local key, body = line:match("^([^\t]*)\t(.*)$")
    table.insert(bodies, {key = key, body = body})
  end
end

function request()
  counter = counter + 1
  local pick = bodies[(counter + tid) % #bodies + 1]
  local body = pick.body:gsub("INV%-X", prefix .. counter, 1)
  local headers = {["Content-Type"] = "application/json"}
  if pick.key ~= "" then
    headers["Authorization"] = "Bearer " .. pick.key
  else
    headers["Idempotency-Key"] = "clm_" .. prefix .. counter
    body = body:gsub('"invoice_number"', '"claim_id":"clm_' .. prefix .. counter .. '","invoice_number"', 1)
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests":%d,"seconds":%.3f,"p50":%.3f,"p90":%.3f,"p99":%.3f,' ..
    '"socket_errors":%d,"codes":{%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(parts, ",")))
end
