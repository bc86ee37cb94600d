-- POST /api/transfers/batch: batch_size random transfers, atomic, a unique Idempotency-Key.
function request()
  sent = sent + 1
  local items = {}
  for i = 1, batch_size do
    items[i] = transfer_json()
  end
  post_headers["Idempotency-Key"] = key_prefix .. "-" .. sent
  local body = '{"atomic":true,"transfers":[' .. table.concat(items, ",") .. "]}"
  return wrk.format("POST", "/api/transfers/batch", post_headers, body)
end
