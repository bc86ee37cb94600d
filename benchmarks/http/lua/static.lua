-- Baselines: the same GET for every request (no auth); the path is given with -p.
function request()
  return wrk.format("GET", wrk.path)
end
