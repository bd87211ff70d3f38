"""The Lua scripts the store runs, so each change that reads before it writes is one atomic step:
two web threads (or a webhook racing a worker) can never queue two trainings for one project,
count one annotation event twice, or release a lock another holder has taken since.

Every script names its keys in KEYS (so it stays cluster-safe) and takes its values in ARGV."""

EVENT_TTL = 24 * 3600  # seconds an annotation event's identity is remembered (duplicates come within seconds)

# ------------------------------------------------------------------ training dedupe (project hash, KEYS[1])
REQUEST = """
local queued = redis.call('HGET', KEYS[1], 'queued_job')
if queued then return {'queued', queued} end
local running = redis.call('HGET', KEYS[1], 'running_job')
if running then
  redis.call('HSET', KEYS[1], 'dirty', '1')
  return {'deferred', running}
end
redis.call('HSET', KEYS[1], 'queued_job', ARGV[1], 'last_job', ARGV[1], 'pending', '0')
return {'enqueue', ARGV[1]}
"""
BEGIN = """
local running = redis.call('HGET', KEYS[1], 'running_job')
if redis.call('HGET', KEYS[1], 'queued_job') == ARGV[1] then redis.call('HDEL', KEYS[1], 'queued_job') end
if running and running ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'dirty', '1')
  return {'busy', running}
end
redis.call('HSET', KEYS[1], 'running_job', ARGV[1], 'stage_job', ARGV[1], 'last_job', ARGV[1])
redis.call('HDEL', KEYS[1], 'dirty')
return {'run', ARGV[1]}
"""
END = """
if redis.call('HGET', KEYS[1], 'running_job') ~= ARGV[1] then return -1 end
redis.call('HDEL', KEYS[1], 'running_job', 'stage_job')
local dirty = redis.call('HGET', KEYS[1], 'dirty')
redis.call('HDEL', KEYS[1], 'dirty')
if dirty then return 1 end
return 0
"""
# Delete hash field ARGV[1] of KEYS[1] only while it holds ARGV[2] (stale training-flag repair).
COMPARE_DELETE_FIELD = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
SET_IF_RUNNING = """
if redis.call('HGET', KEYS[1], 'running_job') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
# Count annotation events: ARGV[1] without an identity, plus each KEYS[2..] identity not seen in
# the last ARGV[3] seconds (Label Studio delivers an event once per webhook with the same URL).
COUNT = """
local fresh = tonumber(ARGV[1])
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[3]) then fresh = fresh + 1 end
end
if fresh == 0 then return {0, tonumber(redis.call('HGET', KEYS[1], 'pending') or '0'), 0} end
local n = redis.call('HINCRBY', KEYS[1], 'pending', fresh)
local every = tonumber(ARGV[2])
if every > 0 and n >= every then
  redis.call('HSET', KEYS[1], 'pending', '0')
  return {1, n, fresh}
end
return {0, n, fresh}
"""

# ------------------------------------------------------------------ locks and claims (a string key, KEYS[1])
# The one release every lock and claim uses: delete KEYS[1] only while it holds the caller's token.
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Hand KEYS[1] from holder ARGV[1] (known dead) to ARGV[2] for ARGV[3] seconds, only if ARGV[1] still holds it.
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
