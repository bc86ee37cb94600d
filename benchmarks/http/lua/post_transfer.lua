-- POST /api/transfers: random accounts and amount, a unique Idempotency-Key per request.
function request()
  sent = sent + 1
  post_headers["Idempotency-Key"] = key_prefix .. "-" .. sent
  return wrk.format("POST", "/api/transfers", post_headers, transfer_json())
end
