"""The HTTP ratio harness behind `make bench` (`python -m benchmarks.http --help`).

Tally's routes are measured against baselines served by granian with the very
same settings on the same machine, one server at a time: a bare ASGI app (a),
a bare Starlette route with msgspec (b), and pgbench against the same
PostgreSQL. The load comes from wrk (C) on 127.0.0.1, driven by the Lua
scripts in `lua/`.
"""
