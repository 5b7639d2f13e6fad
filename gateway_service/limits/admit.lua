-- One admission (gateway_service/limits/store.py has the rules; memory_store.py the same in Python).
-- KEYS: 1 request bucket (hash: level, ts), 2 leases (zset: lease -> expiry ms), 3 day (hash)
-- ARGV: 1 now ms, 2 requests/minute (-1: none), 3 max concurrent (-1: none), 4 tokens/day (-1:
--       none), 5 reserve, 6 provider, 7 lease id, 8 lease ttl ms, 9 day ttl s, 10 day end ms,
--       11.. leases this gateway ended whose settlement may still be on its way (removed first)
-- Returns {admitted 0|1, limit, retry after ms, bucket level * 1000 (-1: none), tokens used,
--          in flight}. A refusal writes nothing.
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local tpd = tonumber(ARGV[4])
local reserve = tonumber(ARGV[5])

local level = -1
local last = now
if rpm >= 0 then
  local bucket = redis.call('HMGET', KEYS[1], 'level', 'ts')
  level = tonumber(bucket[1])
  if level == nil then
    level = rpm
  else
    last = tonumber(bucket[2])
    level = math.min(level, rpm)
    if now > last then
      level = math.min(rpm, level + (now - last) * rpm / 60000)
    end
  end
  if level < 1 then
    local wait = 60000
    if rpm > 0 then wait = math.ceil((1 - level) * 60000 / rpm) end
    return {0, 'requests', wait, 0, 0, 0}
  end
end

if #ARGV > 10 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 11))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[2])
if conc >= 0 and in_flight >= conc then
  return {0, 'concurrency', 1000, 0, 0, 0}
end

local used = tonumber(redis.call('HGET', KEYS[3], 'budget') or '0')
if tpd >= 0 and reserve > 0 and used + reserve > tpd then
  return {0, 'tokens', math.max(1, tonumber(ARGV[10]) - now), 0, 0, 0}
end

-- Every limit passed: take from each.
if rpm >= 0 then
  level = level - 1
  redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', math.max(now, last))
  -- An untouched bucket is full again within a minute: then the key may go.
  redis.call('PEXPIRE', KEYS[1], 60000)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[7])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[8]))
if reserve > 0 then
  used = redis.call('HINCRBY', KEYS[3], 'budget', reserve)
end
redis.call('HINCRBY', KEYS[3], 'req:' .. ARGV[6], 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[9]))
local bucket_out = -1
if rpm >= 0 then bucket_out = math.floor(level * 1000) end
return {1, '', 0, bucket_out, used, in_flight + 1}
