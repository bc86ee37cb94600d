-- GET /api/transfers?account_id=: a random account's newest transfers (first page).
function request()
  return wrk.format("GET", "/api/transfers?limit=20&account_id=" .. random_account(), get_headers)
end
