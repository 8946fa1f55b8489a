//! The Redis side of PROTOCOL.md §9, as Lua scripts that Redis runs atomically: a
//! membership change and its announcement to every live instance's inbox are one
//! step, so every instance sees the cluster's changes in one order.
//!
//! Keys (prefix `wsig:`; ids are URL-unreserved characters, so `:` and space are safe
//! separators):
//! - `seq`: the join-order counter;
//! - `rooms`: the set of room ids with members; `room:{R}`: sorted set, peer → seq;
//! - `peer:{R}:{P}`: hash `inst`, `seq`, `tok` (SHA-1 of its resume token);
//! - `members:{I}`: set of `"{R} {P}"` an instance holds;
//! - `instances`: set of instance ids; `alive:{I}`: expires unless refreshed;
//! - `inbox:{I}`: the instance's stream (capped, approximately).

/// Shared by every script: writes one event into every registered instance's inbox.
const FANOUT: &str = r"
local P = 'wsig:'
local MAXLEN = ARGV[1]
local function fanout(fields)
  for _, i in ipairs(redis.call('SMEMBERS', P .. 'instances')) do
    redis.call('XADD', P .. 'inbox:' .. i, 'MAXLEN', '~', MAXLEN, '*', unpack(fields))
  end
end
local function drop(room, peer)
  local rk = P .. 'room:' .. room
  redis.call('DEL', P .. 'peer:' .. room .. ':' .. peer)
  redis.call('ZREM', rk, peer)
  if redis.call('ZCARD', rk) == 0 then redis.call('SREM', P .. 'rooms', room) end
end
";

/// ARGV: maxlen, me, room, peer, session, token hash, resume hash, max room size.
/// Returns `{'joined', seq}`, `{'moved', seq}`, `{'taken'}` or `{'full'}`.
const CLAIM: &str = r"
local me, room, peer, session, tok, resume, maxroom =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local pk = P .. 'peer:' .. room .. ':' .. peer
local rk = P .. 'room:' .. room
local rec = redis.call('HMGET', pk, 'inst', 'seq', 'tok')
if rec[1] then
  if resume ~= '' and rec[3] and rec[3] ~= '' and rec[3] == resume then
    redis.call('HSET', pk, 'inst', me, 'tok', tok)
    redis.call('SREM', P .. 'members:' .. rec[1], room .. ' ' .. peer)
    redis.call('SADD', P .. 'members:' .. me, room .. ' ' .. peer)
    fanout({'t', 'm', 'r', room, 'p', peer, 's', rec[2], 'f', rec[1], 'o', me, 'x', session})
    return {'moved', rec[2]}
  end
  return {'taken'}
end
if redis.call('ZCARD', rk) >= maxroom then return {'full'} end
local seq = redis.call('INCR', P .. 'seq')
redis.call('ZADD', rk, seq, peer)
redis.call('SADD', P .. 'rooms', room)
redis.call('HSET', pk, 'inst', me, 'seq', seq, 'tok', tok)
redis.call('SADD', P .. 'members:' .. me, room .. ' ' .. peer)
fanout({'t', 'j', 'r', room, 'p', peer, 's', seq, 'i', me, 'x', session})
return {'joined', tostring(seq)}
";

/// ARGV: maxlen, me, room, peer, seq. Drops the claim if it is still this
/// instance's (a resume elsewhere may have moved it) and announces the leave; an
/// unknown claim (Redis restarted) is announced too. Returns 1, 2, or 0 (moved).
const LEAVE: &str = r"
local me, room, peer, seq = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rec = redis.call('HMGET', P .. 'peer:' .. room .. ':' .. peer, 'inst', 'seq')
redis.call('SREM', P .. 'members:' .. me, room .. ' ' .. peer)
if rec[1] == me and rec[2] == seq then
  drop(room, peer)
  fanout({'t', 'l', 'r', room, 'p', peer, 's', seq})
  return 1
end
if not rec[1] then
  -- A Redis restarted during an outage no longer knows it, but other instances may:
  -- the leave is announced all the same (applying it twice changes nothing).
  fanout({'t', 'l', 'r', room, 'p', peer, 's', seq})
  return 2
end
return 0
";

/// ARGV: maxlen, me, alive ms, then (room, peer, seq, token hash) for each local
/// member. Registers the instance, drops what it no longer holds, restores what a
/// restarted Redis lost (keeping the join order), and returns the ids another
/// instance took meanwhile (`"{R} {P}"`).
const REANNOUNCE: &str = r"
local me = ARGV[2]
redis.call('SADD', P .. 'instances', me)
redis.call('SET', P .. 'alive:' .. me, '1', 'PX', ARGV[3])
local want = {}
for i = 4, #ARGV, 4 do want[ARGV[i] .. ' ' .. ARGV[i + 1]] = true end
for _, m in ipairs(redis.call('SMEMBERS', P .. 'members:' .. me)) do
  if not want[m] then
    local sp = string.find(m, ' ', 1, true)
    local room, peer = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
    local rec = redis.call('HMGET', P .. 'peer:' .. room .. ':' .. peer, 'inst', 'seq')
    redis.call('SREM', P .. 'members:' .. me, m)
    if rec[1] == me then
      drop(room, peer)
      fanout({'t', 'l', 'r', room, 'p', peer, 's', rec[2]})
    end
  end
end
local maxseq, conflicts = 0, {}
for i = 4, #ARGV, 4 do
  local room, peer, seq, tok = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local pk = P .. 'peer:' .. room .. ':' .. peer
  local inst = redis.call('HGET', pk, 'inst')
  if not inst then
    redis.call('ZADD', P .. 'room:' .. room, seq, peer)
    redis.call('SADD', P .. 'rooms', room)
    redis.call('HSET', pk, 'inst', me, 'seq', seq, 'tok', tok)
    redis.call('SADD', P .. 'members:' .. me, room .. ' ' .. peer)
    fanout({'t', 'j', 'r', room, 'p', peer, 's', seq, 'i', me, 'x', '0'})
  elseif inst ~= me then
    table.insert(conflicts, room .. ' ' .. peer)
  end
  if tonumber(seq) > maxseq then maxseq = tonumber(seq) end
end
if tonumber(redis.call('GET', P .. 'seq') or '0') < maxseq then
  redis.call('SET', P .. 'seq', maxseq)
end
return conflicts
";

/// ARGV: maxlen, me, alive ms. Refreshes this instance's liveness, removes every
/// instance whose liveness has expired (its members leave, announced), and returns
/// the instances alive.
const HEARTBEAT: &str = r"
local me = ARGV[2]
redis.call('SADD', P .. 'instances', me)
redis.call('SET', P .. 'alive:' .. me, '1', 'PX', ARGV[3])
local alive = {}
for _, i in ipairs(redis.call('SMEMBERS', P .. 'instances')) do
  if redis.call('EXISTS', P .. 'alive:' .. i) == 1 then
    table.insert(alive, i)
  else
    redis.call('SREM', P .. 'instances', i)
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'members:' .. i)) do
      local sp = string.find(m, ' ', 1, true)
      local room, peer = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
      local rec = redis.call('HMGET', P .. 'peer:' .. room .. ':' .. peer, 'inst', 'seq')
      if rec[1] == i then
        drop(room, peer)
        fanout({'t', 'l', 'r', room, 'p', peer, 's', rec[2]})
      end
    end
    redis.call('DEL', P .. 'members:' .. i, P .. 'inbox:' .. i)
  end
end
return alive
";

/// ARGV: maxlen, me. Leaves the cluster on shutdown (its members have left).
const GOODBYE: &str = r"
local me = ARGV[2]
redis.call('SREM', P .. 'instances', me)
redis.call('DEL', P .. 'alive:' .. me, P .. 'members:' .. me, P .. 'inbox:' .. me)
return 1
";

/// Every member as `room, peer, seq, instance`, flattened.
const SNAPSHOT: &str = r"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
  local ms = redis.call('ZRANGE', P .. 'room:' .. room, 0, -1, 'WITHSCORES')
  for i = 1, #ms, 2 do
    local inst = redis.call('HGET', P .. 'peer:' .. room .. ':' .. ms[i], 'inst')
    table.insert(out, room)
    table.insert(out, ms[i])
    table.insert(out, ms[i + 1])
    table.insert(out, inst or '')
  end
end
return out
";

/// The scripts, each with the shared prelude.
pub struct Scripts {
    pub claim: redis::Script,
    pub leave: redis::Script,
    pub reannounce: redis::Script,
    pub heartbeat: redis::Script,
    pub goodbye: redis::Script,
    pub snapshot: redis::Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let s = |body: &str| redis::Script::new(&format!("{FANOUT}{body}"));
        Scripts {
            claim: s(CLAIM),
            leave: s(LEAVE),
            reannounce: s(REANNOUNCE),
            heartbeat: s(HEARTBEAT),
            goodbye: s(GOODBYE),
            snapshot: s(SNAPSHOT),
        }
    }
}

/// The key of an instance's inbox stream.
pub fn inbox(instance: &str) -> String {
    format!("wsig:inbox:{instance}")
}
