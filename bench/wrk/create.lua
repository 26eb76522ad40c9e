-- POST /api/v1/pets with a small valid body.
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
wrk.method = "POST"
wrk.path = "/api/v1/pets"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"Bench","species":"dog","tags":["fast","friendly"]}'
