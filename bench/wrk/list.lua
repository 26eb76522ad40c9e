-- GET /api/v1/pets?limit=20 at offsets spread over the seeded pets.
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
local pets = tonumber(os.getenv("PETS") or "1000")
math.randomseed(7)
request = function()
  return wrk.format("GET", "/api/v1/pets?limit=20&offset=" .. math.random(0, pets - 20))
end
