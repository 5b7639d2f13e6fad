-- One settlement: free the lease, replace the reserve by what was spent, add today's tokens.
-- KEYS: 1 leases (zset), 2 day (hash)
-- ARGV: 1 lease id, 2 spent - reserve, 3 provider, 4 prompt tokens, 5 completion tokens, 6 day ttl s
redis.call('ZREM', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[2])
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[2], 'budget', delta)
end
redis.call('HINCRBY', KEYS[2], 'in:' .. ARGV[3], tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[2], 'out:' .. ARGV[3], tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
return 1
