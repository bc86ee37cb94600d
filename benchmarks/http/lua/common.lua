-- Shared by every route script (the harness prepends it to the route's file).
-- wrk args (after --): token, accounts file (one id a line), batch size, key prefix.
-- done() prints one line "WRKJSON {...}" that the harness parses.

local next_thread = 1
local threads = {}

function setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
  threads[#threads + 1] = thread
end

-- With WRK_COUNT_STATUSES=1, count responses by status (costs the generator a
-- little per response, so only the write routes turn it on).
if os.getenv("WRK_COUNT_STATUSES") == "1" then
  statuses = {}
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function init(args)
  token = args[1] or ""
  accounts = {}
  if args[2] and args[2] ~= "" then
    for line in io.lines(args[2]) do
      accounts[#accounts + 1] = line
    end
  end
  batch_size = tonumber(args[3] or "1")
  key_prefix = (args[4] or "k") .. "-" .. tostring(thread_no or 0)
  sent = 0
  math.randomseed(os.time() + 7919 * (thread_no or 0))
  get_headers = {["Authorization"] = "Bearer " .. token}
  post_headers = {["Authorization"] = "Bearer " .. token,
                  ["Content-Type"] = "application/json"}
end

function random_account()
  return accounts[math.random(#accounts)]
end

function transfer_json()
  local debit = random_account()
  local credit = random_account()
  while credit == debit do
    credit = random_account()
  end
  return string.format(
    '{"debit_account_id":"%s","credit_account_id":"%s","amount":%d,"currency":"USD"}',
    debit, credit, math.random(1, 10000))
end

local function status_json()
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    if counts then
      for status, n in pairs(counts) do
        total[status] = (total[status] or 0) + n
      end
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"statuses":%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, status_json()))
end
