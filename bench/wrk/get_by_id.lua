-- GET /api/v1/pets/{id} over the seeded ids (1..PETS).
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
local pets = tonumber(os.getenv("PETS") or "1000")
math.randomseed(42)
request = function()
  return wrk.format("GET", "/api/v1/pets/" .. math.random(1, pets))
end
