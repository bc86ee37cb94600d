-- GET /api/accounts/{id}: a random account of the tenant per request, with the bearer token.
function request()
  return wrk.format("GET", "/api/accounts/" .. random_account(), get_headers)
end
