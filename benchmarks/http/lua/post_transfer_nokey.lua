-- POST /api/transfers without an Idempotency-Key: what the key claim costs, by difference.
function request()
  return wrk.format("POST", "/api/transfers", post_headers, transfer_json())
end
