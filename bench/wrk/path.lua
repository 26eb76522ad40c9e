-- GET one fixed path and query, BENCH_PATH (bench/scale's list shapes).
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
local path = os.getenv("BENCH_PATH")
request = function()
  return wrk.format("GET", path)
end
