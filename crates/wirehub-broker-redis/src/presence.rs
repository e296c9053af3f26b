//! Presence across nodes: members as leases in Redis that their node renews, removed (with
//! one `leave` cluster-wide) when their grace ends or their node stops renewing them.
//!
//! # Keys (default prefix `wirehub:`, channel `room`)
//! - `wirehub:{room}:members`: a sorted set, member `client` → the end of its lease (or of its
//!   grace), in Redis' milliseconds (`TIME`);
//! - `wirehub:{room}:member`: a hash, `client` → the member's JSON;
//! - `wirehub:{room}:graced`: a hash, user → the clients of that user in their grace
//!   (space-separated, oldest first), for takeovers;
//! - `wirehub:presence:due`: a sorted set, channel → a time at or before which one of the
//!   channel's entries may end (the reapers' index; one key of its own).
//!
//! The three keys of a channel share its `{room}` hash tag, so every script runs on one slot
//! (Redis Cluster). Join and leave announcements go through the channel's pub/sub channel
//! (`wirehub:{room}:messages`) as `+ JSON` and `- JSON`: payloads that no publication has
//! (those start with an epoch), so they take no offset and every node watching the channel
//! hands them to its subscribers.
//!
//! # Scripts (each atomic)
//! - `join`: a graced client of the same user is taken over (its lease renewed, nothing
//!   published); otherwise the member is added and `+ JSON` published. Returns whether it
//!   was announced, the member taken over, whether the channel was empty, and the lease end.
//! - `leave`: removes the member and publishes `- JSON` when it was there.
//! - `grace`: the member's entry ends at the grace's end instead; the user's graced list
//!   gets it.
//! - `renew`: extends the leases of a node's members; returns those that are gone (reaped
//!   while the node could not renew them), which the node joins again.
//! - `reap`: removes the entries that ended (publishing each `- JSON`): run by any node, the
//!   script decides atomically which call removes an entry, so each `leave` is sent once.
//! - `due` / `reschedule`: read and update the index.
//!
//! # Index
//! A join into an empty channel sets the channel's due time to its lease end; other joins and
//! graces lower it (`ZADD LT`). A reaper picks the channels whose due time passed, reaps each
//! and sets its due time to the earliest entry's end (or removes the channel when it has no
//! entries): only when the due time is still the one it picked, so that a join in between,
//! whose lease ends later, is never lost from the index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{Script, Value};
use tracing::{debug, warn};
use wirehub_core::{Departure, Joined, Left, PresencePage};
use wirehub_protocol::Member;

use crate::error::{Error, Result};
use crate::shared::Shared;

/// Channels looked at per reaping round, and entries removed per channel and script run.
const REAP_BATCH: usize = 100;

/// Script runs per channel and reaping round at most (so a sweep removes up to 5 000 ended
/// entries of one channel).
const REAP_ROUNDS: usize = 50;

const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ungrace(key, user, client)
  local list = redis.call('HGET', key, user)
  if not list then return end
  local kept = {}
  for c in string.gmatch(list, '%S+') do
    if c ~= client then kept[#kept + 1] = c end
  end
  if #kept == 0 then redis.call('HDEL', key, user) else redis.call('HSET', key, user, table.concat(kept, ' ')) end
end
local function remove(client, channel)
  redis.call('ZREM', KEYS[1], client)
  local json = redis.call('HGET', KEYS[2], client)
  redis.call('HDEL', KEYS[2], client)
  if json then
    local ok, member = pcall(cjson.decode, json)
    if ok and type(member.user) == 'string' then ungrace(KEYS[3], member.user, client) end
    redis.call(ARGV[#ARGV], channel, '- ' .. json)
  end
  return json
end
";

/// KEYS: members, member, graced. ARGV: client, user ('' none), JSON, lease (ms), pub/sub
/// channel, publish command (last, as for every script here that announces). Returns {announced, taken-over JSON or '', first, lease end}.
const JOIN: &str = r"
local until_ms = now_ms() + tonumber(ARGV[4])
local first = redis.call('EXISTS', KEYS[1]) == 0 and 1 or 0
if ARGV[2] ~= '' then
  local list = redis.call('HGET', KEYS[3], ARGV[2])
  while list do
    local old, rest = string.match(list, '^(%S+)%s*(.*)$')
    if not old then break end
    if rest == '' then
      redis.call('HDEL', KEYS[3], ARGV[2])
      list = nil
    else
      redis.call('HSET', KEYS[3], ARGV[2], rest)
      list = rest
    end
    local json = redis.call('HGET', KEYS[2], old)
    if json and redis.call('ZSCORE', KEYS[1], old) then
      redis.call('ZADD', KEYS[1], until_ms, old)
      return {0, json, 0, until_ms}
    end
  end
end
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call(ARGV[#ARGV], ARGV[5], '+ ' .. ARGV[3])
return {1, '', first, until_ms}
";

/// KEYS: members, member, graced. ARGV: client, pub/sub channel. Returns the JSON or nil.
const LEAVE: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
return remove(ARGV[1], ARGV[2])
";

/// KEYS: members, member, graced. ARGV: client, user ('' none), grace (ms). Returns the
/// grace's end, or 0 when the client is not a member.
const GRACE: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local until_ms = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
if ARGV[2] ~= '' then
  local list = redis.call('HGET', KEYS[3], ARGV[2])
  if list then list = list .. ' ' .. ARGV[1] else list = ARGV[1] end
  redis.call('HSET', KEYS[3], ARGV[2], list)
end
return until_ms
";

/// KEYS: members. ARGV: lease (ms), clients... Returns the clients that are gone.
const RENEW: &str = r"
local until_ms = now_ms() + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i]) == 0 and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
";

/// KEYS: members, member, graced. ARGV: pub/sub channel, batch. Returns {now, next end or
/// '', JSON of each removed member...}.
const REAP: &str = r"
local now = now_ms()
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {tostring(now), ''}
for _, client in ipairs(ended) do
  local json = remove(client, ARGV[1])
  if json then out[#out + 1] = json end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[2] = first[2] end
return out
";

/// KEYS: due. ARGV: batch. The channels whose due time passed.
const DUE: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
";

/// KEYS: due. ARGV: channel, the time it was picked at, the next due time ('' none).
const RESCHEDULE: &str = r"
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) <= tonumber(ARGV[2]) then
  if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
end
return 1
";

/// KEYS: members, member. ARGV: how many to list. Returns {count, JSON...}.
const READ: &str = r"
local count = redis.call('ZCARD', KEYS[1])
local out = {count}
if count == 0 then return out end
local clients = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, client in ipairs(clients) do
  local json = redis.call('HGET', KEYS[2], client)
  if json then out[#out + 1] = json end
end
return out
";

struct Scripts {
    join: Script,
    leave: Script,
    grace: Script,
    renew: Script,
    reap: Script,
    due: Script,
    reschedule: Script,
    read: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{COMMON}{body}"));
        Scripts {
            join: script(JOIN),
            leave: script(LEAVE),
            grace: script(GRACE),
            renew: script(RENEW),
            reap: script(REAP),
            due: script(DUE),
            reschedule: script(RESCHEDULE),
            read: script(READ),
        }
    }
}

/// This node's members, which it renews, and the presence scripts.
pub(crate) struct Presence {
    scripts: Scripts,
    lease: Duration,
    /// Channel → client → the member as listed.
    local: Mutex<HashMap<Arc<str>, HashMap<String, Member>>>,
    renewed: Mutex<Instant>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The keys of a channel's members: sorted set, hash, graced users.
fn channel_keys(shared: &Shared, channel: &str) -> [String; 3] {
    let prefix = shared.keys.prefix();
    [
        format!("{prefix}{{{channel}}}:members"),
        format!("{prefix}{{{channel}}}:member"),
        format!("{prefix}{{{channel}}}:graced"),
    ]
}

fn due_key(shared: &Shared) -> String {
    format!("{}presence:due", shared.keys.prefix())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn parse_member(json: &[u8]) -> Result<Member> {
    Member::from_json(json).ok_or_else(|| {
        Error::Reply(format!(
            "a presence member that is not a member: {}",
            String::from_utf8_lossy(json)
        ))
    })
}

impl Presence {
    pub(crate) fn new(lease: Duration) -> Presence {
        Presence {
            scripts: Scripts::new(),
            lease,
            local: Mutex::new(HashMap::new()),
            renewed: Mutex::new(Instant::now()),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashMap<String, Member>>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn join(
        &self,
        shared: &Shared,
        channel: &str,
        member: Member,
    ) -> Result<Joined> {
        let joined = self.join_script(shared, channel, &member).await?;
        self.local()
            .entry(Arc::from(channel))
            .or_default()
            .insert(joined.member.client.clone(), joined.member.clone());
        Ok(joined)
    }

    async fn join_script(&self, shared: &Shared, channel: &str, member: &Member) -> Result<Joined> {
        let [members, info, graced] = channel_keys(shared, channel);
        let mut invocation = self.scripts.join.prepare_invoke();
        invocation
            .key(members)
            .key(info)
            .key(graced)
            .arg(&member.client)
            .arg(member.user.as_deref().unwrap_or(""))
            .arg(member.to_json())
            .arg(millis(self.lease))
            .arg(shared.keys.messages(channel))
            .arg(shared.publish_command());
        let (announced, taken, first, until): (u8, Vec<u8>, u8, u64) =
            shared.commands.invoke(&invocation).await?;
        if announced == 1 {
            let mut pipeline = redis::pipe();
            let due = pipeline.cmd("ZADD").arg(due_key(shared));
            if first == 0 {
                due.arg("LT");
            }
            due.arg(until).arg(channel).ignore();
            shared.commands.pipeline(&pipeline).await?;
            return Ok(Joined {
                member: member.clone(),
                announced: true,
            });
        }
        Ok(Joined {
            member: parse_member(&taken)?,
            announced: false,
        })
    }

    pub(crate) async fn leave(
        &self,
        shared: &Shared,
        channel: &str,
        client: &str,
        departure: Departure,
    ) -> Result<Option<Member>> {
        let member = {
            let mut local = self.local();
            let member = local.get_mut(channel).and_then(|m| m.remove(client));
            if local.get(channel).is_some_and(HashMap::is_empty) {
                local.remove(channel);
            }
            member
        };
        let [members, info, graced] = channel_keys(shared, channel);
        match departure {
            Departure::Now => {
                let mut invocation = self.scripts.leave.prepare_invoke();
                invocation
                    .key(members)
                    .key(info)
                    .key(graced)
                    .arg(client)
                    .arg(shared.keys.messages(channel))
                    .arg(shared.publish_command());
                let json: Option<Vec<u8>> = shared.commands.invoke(&invocation).await?;
                json.map(|json| parse_member(&json)).transpose()
            }
            Departure::Grace(grace) => {
                let user = member
                    .as_ref()
                    .and_then(|m| m.user.as_deref())
                    .unwrap_or("");
                let mut invocation = self.scripts.grace.prepare_invoke();
                invocation
                    .key(members)
                    .key(info)
                    .key(graced)
                    .arg(client)
                    .arg(user)
                    .arg(millis(grace));
                let until: u64 = shared.commands.invoke(&invocation).await?;
                if until > 0 {
                    let mut pipeline = redis::pipe();
                    pipeline
                        .cmd("ZADD")
                        .arg(due_key(shared))
                        .arg("LT")
                        .arg(until)
                        .arg(channel)
                        .ignore();
                    shared.commands.pipeline(&pipeline).await?;
                }
                Ok(None)
            }
        }
    }

    pub(crate) async fn read(
        &self,
        shared: &Shared,
        channel: &str,
        max: usize,
    ) -> Result<PresencePage> {
        let [members, info, _] = channel_keys(shared, channel);
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation.key(members).key(info).arg(max.max(1));
        let reply: Vec<Value> = shared.commands.invoke(&invocation).await?;
        let mut reply = reply.into_iter();
        let count = match reply.next() {
            Some(Value::Int(count)) => u64::try_from(count).unwrap_or(0),
            other => return Err(Error::Reply(format!("presence count {other:?}"))),
        };
        let mut listed = Vec::new();
        for value in reply.take(max) {
            match value {
                Value::BulkString(json) => listed.push(parse_member(&json)?),
                other => return Err(Error::Reply(format!("presence member {other:?}"))),
            }
        }
        Ok(PresencePage {
            count,
            truncated: (listed.len() as u64) < count,
            members: listed,
        })
    }

    /// Renews this node's leases when a third of the lease passed, then reaps what ended.
    pub(crate) async fn sweep(&self, shared: &Shared) -> Result<Vec<Left>> {
        let renew = {
            let mut renewed = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
            let due = renewed.elapsed() >= self.lease / 3;
            if due {
                *renewed = Instant::now();
            }
            due
        };
        if renew {
            self.renew(shared).await?;
        }
        self.reap(shared).await
    }

    async fn renew(&self, shared: &Shared) -> Result<()> {
        let held: Vec<(Arc<str>, Vec<String>)> = self
            .local()
            .iter()
            .map(|(channel, members)| (channel.clone(), members.keys().cloned().collect()))
            .collect();
        for (channel, clients) in held {
            for chunk in clients.chunks(500) {
                let [members, _, _] = channel_keys(shared, &channel);
                let mut invocation = self.scripts.renew.prepare_invoke();
                invocation.key(members).arg(millis(self.lease));
                for client in chunk {
                    invocation.arg(client);
                }
                let gone: Vec<String> = shared.commands.invoke(&invocation).await?;
                for client in gone {
                    // Reaped while this node could not renew it (it was cut off for longer
                    // than the lease): the connection is still here, so it joins again.
                    let member = self
                        .local()
                        .get(&channel)
                        .and_then(|m| m.get(&client).cloned());
                    if let Some(member) = member {
                        warn!(%channel, %client, "a presence member's lease ended while its connection lives; joining again");
                        let joined = self.join_script(shared, &channel, &member).await?;
                        if let Some(members) = self.local().get_mut(&channel) {
                            members.remove(&client);
                            members.insert(joined.member.client.clone(), joined.member);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn reap(&self, shared: &Shared) -> Result<Vec<Left>> {
        let mut invocation = self.scripts.due.prepare_invoke();
        invocation.key(due_key(shared)).arg(REAP_BATCH);
        let channels: Vec<String> = shared.commands.invoke(&invocation).await?;
        let mut left = Vec::new();
        for channel in channels {
            let [members, info, graced] = channel_keys(shared, &channel);
            let name: Arc<str> = Arc::from(channel.as_str());
            let mut rounds = 0;
            // A full batch may leave more ended entries behind (a node with many members
            // died): go on at once, up to REAP_ROUNDS batches per channel and sweep.
            let (now, next) = loop {
                rounds += 1;
                let mut invocation = self.scripts.reap.prepare_invoke();
                invocation
                    .key(&members)
                    .key(&info)
                    .key(&graced)
                    .arg(shared.keys.messages(&channel))
                    .arg(REAP_BATCH)
                    .arg(shared.publish_command());
                let reply: Vec<Vec<u8>> = shared.commands.invoke(&invocation).await?;
                let mut reply = reply.into_iter();
                let (Some(now), Some(next)) = (reply.next(), reply.next()) else {
                    return Err(Error::Reply("a reap without its times".to_owned()));
                };
                let removed = reply.len();
                for json in reply {
                    match parse_member(&json) {
                        Ok(member) => left.push(Left {
                            channel: name.clone(),
                            member,
                        }),
                        Err(err) => debug!(%channel, error = %err, "reaped an unreadable member"),
                    }
                }
                if removed < REAP_BATCH || rounds >= REAP_ROUNDS {
                    break (now, next);
                }
            };
            let mut invocation = self.scripts.reschedule.prepare_invoke();
            invocation
                .key(due_key(shared))
                .arg(&channel)
                .arg(now)
                .arg(next);
            let _: i64 = shared.commands.invoke(&invocation).await?;
        }
        Ok(left)
    }
}

/// Splits a pub/sub payload `+ JSON` (join) or `- JSON` (leave).
pub(crate) fn parse_announcement(payload: &[u8]) -> Option<(wirehub_protocol::MemberEvent, &[u8])> {
    match payload {
        [b'+', b' ', json @ ..] => Some((wirehub_protocol::MemberEvent::Join, json)),
        [b'-', b' ', json @ ..] => Some((wirehub_protocol::MemberEvent::Leave, json)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_told_apart_from_publications() {
        assert!(matches!(
            parse_announcement(b"+ {\"client\":\"a\"}"),
            Some((wirehub_protocol::MemberEvent::Join, b"{\"client\":\"a\"}"))
        ));
        assert!(matches!(
            parse_announcement(b"- {}"),
            Some((wirehub_protocol::MemberEvent::Leave, b"{}"))
        ));
        assert_eq!(parse_announcement(b"0123abcd 4 {}"), None);
        assert_eq!(parse_announcement(b"+"), None);
    }
}
