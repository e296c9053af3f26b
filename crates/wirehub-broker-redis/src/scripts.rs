//! The two Lua scripts that own a channel's stream in Redis, and their replies.
//!
//! Each runs atomically, so a publish (epoch, offset, history, `PUBLISH`) is one step for
//! every node: the order of the `PUBLISH`es on a channel is the order of its offsets.
//! - `publish`: get or create the epoch; when the publish has an idempotency key that a
//!   message still in the history was published with, return that message's offset and stop;
//!   else `INCR` the offset, append `OFFSET MILLIS DATA` to the history list and trim it,
//!   remember the key, refresh expiries, `PUBLISH EPOCH OFFSET DATA`; returns the offset.
//! - `read`: get or create the epoch, then the offset and the history entries after `since`
//!   (a consistent snapshot), refresh the epoch's expiry, and optionally `PUBLISH` a fence
//!   token on the reading node's private channel (see `fence` in `subscriptions`).
//!
//! - `rewind`: after a failover lost publications that a node had already delivered (the
//!   stream is behind what the node saw, or holds another message at the node's last
//!   offset), start a new epoch so that no client can take the new messages at those offsets
//!   for the ones it had (see `listener`).
//!
//! On a Redis Cluster every key a script touches carries the channel's `{hash tag}` (one
//! slot), and the scripts publish with `SPUBLISH` (sharded pub/sub, on the channel's slot):
//! the command is an argument, `PUBLISH` elsewhere.
//!
//! A stream whose epoch or offset key is missing (never used, expired, flushed, evicted)
//! starts over: a fresh epoch (random, from the caller), offset 0, no history. Creating it
//! inside the script makes every node agree on it.

use redis::{Script, Value};

/// Shared by both scripts: the clock, and opening (or starting over) a stream.
const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function open_stream(fresh, keep)
  local epoch = redis.call('GET', KEYS[1])
  local top = redis.call('GET', KEYS[2])
  if not epoch or not top then
    epoch = fresh
    top = 0
    redis.call('SET', KEYS[1], epoch, 'PX', keep)
    redis.call('SET', KEYS[2], 0, 'PX', keep)
    redis.call('DEL', KEYS[3])
  end
  return epoch, tonumber(top)
end
";

/// KEYS: epoch, offset, history, idempotency keys. ARGV: fresh epoch, data, history size,
/// history TTL (ms, 0: none), keep (ms), pub/sub channel, idempotency key ('' for none),
/// publish command (`PUBLISH` or `SPUBLISH`).
/// Returns {offset, 1 when the key matched a message still in the history (nothing was
/// published; the offset is that message's), else 0}.
///
/// The keys hash maps an idempotency key to `EPOCH OFFSET MILLIS` of the message published
/// with it; an entry counts while that message would still be in the history (one of the last
/// `size` offsets of the same epoch, younger than the TTL). Entries past that are pruned once
/// the hash holds twice the history size, so it stays bounded by the history's size.
const PUBLISH: &str = r"
local keep = tonumber(ARGV[5])
local epoch, top = open_stream(ARGV[1], keep)
local size = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local key = ARGV[7]
local now = now_ms()
local function kept(entry, latest)
  local a = string.find(entry, ' ', 1, true)
  local b = string.find(entry, ' ', a + 1, true)
  local offset = tonumber(string.sub(entry, a + 1, b - 1))
  local ok = string.sub(entry, 1, a - 1) == epoch
    and offset > latest - size
    and (ttl == 0 or tonumber(string.sub(entry, b + 1)) > now - ttl)
  return ok, offset
end
if key ~= '' and size > 0 then
  local seen = redis.call('HGET', KEYS[4], key)
  if seen then
    local ok, offset = kept(seen, top)
    if ok then
      return {offset, 1}
    end
  end
end
local offset = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
if size > 0 then
  redis.call('RPUSH', KEYS[3], offset .. ' ' .. now .. ' ' .. ARGV[2])
  redis.call('LTRIM', KEYS[3], -size, -1)
  local expiry = keep
  if ttl > 0 then
    expiry = ttl
  end
  redis.call('PEXPIRE', KEYS[3], expiry)
  if key ~= '' then
    redis.call('HSET', KEYS[4], key, epoch .. ' ' .. offset .. ' ' .. now)
    if redis.call('HLEN', KEYS[4]) > 2 * size then
      local all = redis.call('HGETALL', KEYS[4])
      for i = 1, #all, 2 do
        if not kept(all[i + 1], offset) then
          redis.call('HDEL', KEYS[4], all[i])
        end
      end
    end
    redis.call('PEXPIRE', KEYS[4], expiry)
  end
end
redis.call(ARGV[8], ARGV[6], epoch .. ' ' .. offset .. ' ' .. ARGV[2])
return {offset, 0}
";

/// KEYS: epoch, offset, history. ARGV: fresh epoch, since epoch ('' for none), since offset,
/// limit (-1: none), history TTL (ms, 0: none), keep (ms), fence channel ('' for none), fence
/// token, publish command. Returns {epoch, top, first kept offset (top + 1 when none), {offset, data, ...}}.
const READ: &str = r"
local keep = tonumber(ARGV[6])
local epoch, top = open_stream(ARGV[1], keep)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
local kept_from = top + 1
local entries = {}
local since = tonumber(ARGV[3])
if ARGV[2] == epoch and since <= top then
  local limit = tonumber(ARGV[4])
  local ttl = tonumber(ARGV[5])
  local oldest = 0
  if ttl > 0 then
    oldest = now_ms() - ttl
  end
  local first = true
  for _, entry in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    local a = string.find(entry, ' ', 1, true)
    local b = string.find(entry, ' ', a + 1, true)
    if tonumber(string.sub(entry, a + 1, b - 1)) > oldest then
      local offset = tonumber(string.sub(entry, 1, a - 1))
      if first then
        kept_from = offset
        first = false
      end
      if offset > since then
        if limit >= 0 and #entries >= 2 * limit then
          break
        end
        entries[#entries + 1] = offset
        entries[#entries + 1] = string.sub(entry, b + 1)
      end
    end
  end
end
if ARGV[7] ~= '' then
  redis.call(ARGV[9], ARGV[7], ARGV[8])
end
return {epoch, top, kept_from, entries}
";

/// KEYS: epoch, offset, history. ARGV: fresh epoch, the epoch the node saw, keep (ms).
/// When the stream is still in that epoch, moves it to the fresh one (same offset, no
/// history). Returns {epoch, top}.
const REWIND: &str = r"
local keep = tonumber(ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
  redis.call('DEL', KEYS[3])
end
local epoch, top = open_stream(ARGV[1], keep)
return {epoch, top}
";

/// The scripts, hashed once (`EVALSHA`, loaded again after a Redis restart).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) read: Script,
    pub(crate) rewind: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            publish: Script::new(&format!("{COMMON}{PUBLISH}")),
            read: Script::new(&format!("{COMMON}{READ}")),
            rewind: Script::new(&format!("{COMMON}{REWIND}")),
        }
    }
}

/// What the `read` script saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) epoch: String,
    pub(crate) top: u64,
    /// The oldest offset still in the history (`top + 1` when none).
    pub(crate) kept_from: u64,
    /// The kept entries after `since` (when `since` is of this epoch), oldest first.
    pub(crate) entries: Vec<(u64, Vec<u8>)>,
}

impl redis::FromRedisValue for Snapshot {
    fn from_redis_value(value: &Value) -> redis::RedisResult<Snapshot> {
        let invalid = || {
            redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "unexpected reply from the read script",
            ))
        };
        let Value::Array(fields) = value else {
            return Err(invalid());
        };
        let [epoch, top, kept_from, entries] = fields.as_slice() else {
            return Err(invalid());
        };
        let Value::Array(entries) = entries else {
            return Err(invalid());
        };
        let entries = entries
            .chunks(2)
            .map(|pair| match pair {
                [offset, data] => {
                    Ok((u64::from_redis_value(offset)?, Vec::from_redis_value(data)?))
                }
                _ => Err(invalid()),
            })
            .collect::<redis::RedisResult<_>>()?;
        Ok(Snapshot {
            epoch: String::from_redis_value(epoch)?,
            top: u64::from_redis_value(top)?,
            kept_from: u64::from_redis_value(kept_from)?,
            entries,
        })
    }
}
