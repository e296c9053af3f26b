//! Presence: who is subscribed to a presence channel (`[[channels]] presence = true`), the
//! types of the [`crate::Broker`] presence methods, and the in-process member registry of the
//! [`crate::MemoryBroker`].
//!
//! A member is a connection subscribed to a presence channel, with the user and `info` of its
//! token. A join is one entry added and one `join` frame per subscriber (built once per node);
//! a read lists at most a bounded number of members with the exact count. Nothing here ever
//! sends a member list to subscribers.
//!
//! **Grace.** A member whose connection ended without saying goodbye (lost, heartbeat
//! timeout, server shutdown) is not removed at once: it stays listed for the grace, and a
//! join of the same user on the same channel within the grace takes it over silently (no
//! `leave`, no `join`; the member keeps its listed identity). A mass reconnect after a deploy
//! therefore announces nothing. A member whose grace ends is removed by
//! [`crate::Broker::presence_sweep`], which announces its `leave`. Members without a user (no token)
//! cannot be recognised and are never taken over.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wirehub_protocol::{Member, MemberEvent};

use crate::broker::{BrokerError, Deliver};
use crate::hub::{Hub, HubError};
use crate::outbox::lock;

/// The outcome of [`crate::Broker::presence_join`].
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The member as listed: the one given, or, after a takeover, the member in its grace
    /// that the new connection continues (its `client` is the earlier connection's). Leave
    /// with this member's `client`.
    pub member: Member,
    /// Whether a `join` was announced (false after a takeover).
    pub announced: bool,
}

/// How a member leaves ([`crate::Broker::presence_leave`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// At once: the client unsubscribed or closed its connection, or was refused for good.
    Now,
    /// After this grace, unless a join of the same user on the channel takes it over.
    Grace(Duration),
}

/// A member removed by [`crate::Broker::presence_sweep`] (its `leave` was announced).
#[derive(Debug, Clone, PartialEq)]
pub struct Left {
    /// The channel.
    pub channel: Arc<str>,
    /// Who left.
    pub member: Member,
}

/// A presence channel's members ([`crate::Broker::presence`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresencePage {
    /// How many members the channel has.
    pub count: u64,
    /// At most the asked-for number of them.
    pub members: Vec<Member>,
    /// Whether `members` lists fewer than `count`.
    pub truncated: bool,
}

impl Hub {
    /// Whether `channel` has presence (a `[[channels]]` table says `presence = true`).
    pub fn presence_enabled(&self, channel: &str) -> bool {
        self.fanout().rules().presence(channel)
    }

    /// See [`crate::Broker::presence_join`].
    ///
    /// # Errors
    /// A broker failure.
    pub async fn presence_join(&self, channel: &str, member: Member) -> Result<Joined, HubError> {
        Ok(self.broker().presence_join(channel, member).await?)
    }

    /// See [`crate::Broker::presence_leave`].
    ///
    /// # Errors
    /// A broker failure.
    pub async fn presence_leave(
        &self,
        channel: &str,
        client: &str,
        departure: Departure,
    ) -> Result<Option<Member>, HubError> {
        Ok(self
            .broker()
            .presence_leave(channel, client, departure)
            .await?)
    }

    /// See [`crate::Broker::presence`].
    ///
    /// # Errors
    /// A broker failure.
    pub async fn presence(&self, channel: &str, max: usize) -> Result<PresencePage, HubError> {
        Ok(self.broker().presence(channel, max).await?)
    }

    /// See [`crate::Broker::presence_sweep`].
    ///
    /// # Errors
    /// A broker failure.
    pub async fn presence_sweep(&self) -> Result<Vec<Left>, HubError> {
        Ok(self.broker().presence_sweep().await?)
    }
}

/// The members of every presence channel of one process (the in-memory broker's).
#[derive(Default)]
pub(crate) struct MemoryPresence {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("MemoryPresence")
            .field("channels", &state.channels.len())
            .field("graced", &state.graced.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    channels: HashMap<Arc<str>, Channel>,
    /// Members in their grace, by the end of it: (end, sequence) → (channel, client).
    graced: BTreeMap<(Instant, u64), (Arc<str>, Arc<str>)>,
    next: u64,
}

struct Channel {
    name: Arc<str>,
    members: HashMap<Arc<str>, Entry>,
    /// Members in their grace, per user: the clients, oldest first.
    graced_by_user: HashMap<String, Vec<Arc<str>>>,
}

struct Entry {
    member: Member,
    /// The member's JSON text, as sent in `join`/`leave`.
    json: String,
    /// The key of the member in `State::graced`, while it is in its grace.
    graced: Option<(Instant, u64)>,
}

impl MemoryPresence {
    pub(crate) fn join(&self, channel: &str, member: Member, sink: &dyn Deliver) -> Joined {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let entry = state
            .channels
            .entry(Arc::from(channel))
            .or_insert_with_key(|name| Channel {
                name: name.clone(),
                members: HashMap::new(),
                graced_by_user: HashMap::new(),
            });
        if let Some(user) = &member.user
            && let Some(clients) = entry.graced_by_user.get_mut(user)
            && !clients.is_empty()
        {
            let client = clients.remove(0);
            if clients.is_empty() {
                entry.graced_by_user.remove(user);
            }
            if let Some(taken) = entry.members.get_mut(&client) {
                if let Some(key) = taken.graced.take() {
                    state.graced.remove(&key);
                }
                return Joined {
                    member: taken.member.clone(),
                    announced: false,
                };
            }
        }
        let json = member.to_json();
        sink.member(channel, MemberEvent::Join, json.as_bytes());
        entry.members.insert(
            Arc::from(member.client.as_str()),
            Entry {
                member: member.clone(),
                json,
                graced: None,
            },
        );
        Joined {
            member,
            announced: true,
        }
    }

    pub(crate) fn leave(
        &self,
        channel: &str,
        client: &str,
        departure: Departure,
        sink: &dyn Deliver,
    ) -> Option<Member> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let entry = state.channels.get_mut(channel)?;
        let member = entry.members.get_mut(client)?;
        match departure {
            Departure::Grace(grace) => {
                if member.graced.is_some() {
                    return None;
                }
                let key = (Instant::now() + grace, state.next);
                state.next += 1;
                member.graced = Some(key);
                let name: Arc<str> = Arc::from(client);
                if let Some(user) = &member.member.user {
                    entry
                        .graced_by_user
                        .entry(user.clone())
                        .or_default()
                        .push(name.clone());
                }
                state.graced.insert(key, (entry.name.clone(), name));
                None
            }
            Departure::Now => {
                let removed = remove(state, channel, client)?;
                sink.member(channel, MemberEvent::Leave, removed.json.as_bytes());
                Some(removed.member)
            }
        }
    }

    pub(crate) fn read(&self, channel: &str, max: usize) -> crate::presence::PresencePage {
        let state = lock(&self.state);
        let Some(entry) = state.channels.get(channel) else {
            return PresencePage::default();
        };
        let count = entry.members.len();
        let members: Vec<Member> = entry
            .members
            .values()
            .take(max)
            .map(|e| e.member.clone())
            .collect();
        PresencePage {
            count: count as u64,
            truncated: members.len() < count,
            members,
        }
    }

    /// Removes the members whose grace ended, announcing each `leave`.
    pub(crate) fn sweep(&self, sink: &dyn Deliver) -> Vec<Left> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let state = &mut *state;
        let mut left = Vec::new();
        while let Some(entry) = state.graced.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (channel, client) = entry.remove();
            if let Some(removed) = remove(state, &channel, &client) {
                sink.member(&channel, MemberEvent::Leave, removed.json.as_bytes());
                left.push(Left {
                    channel,
                    member: removed.member,
                });
            }
        }
        left
    }
}

/// Removes a member (and its grace) from the state.
fn remove(state: &mut State, channel: &str, client: &str) -> Option<Entry> {
    let entry = state.channels.get_mut(channel)?;
    let removed = entry.members.remove(client)?;
    if let Some(key) = removed.graced {
        state.graced.remove(&key);
        if let Some(user) = &removed.member.user
            && let Some(clients) = entry.graced_by_user.get_mut(user)
        {
            clients.retain(|c| **c != *client);
            if clients.is_empty() {
                entry.graced_by_user.remove(user);
            }
        }
    }
    if entry.members.is_empty() {
        state.channels.remove(channel);
    }
    Some(removed)
}

/// The broker methods' results for a broker that cannot fail.
pub(crate) fn ready<T: Send + 'static>(
    value: T,
) -> crate::broker::BoxFuture<'static, Result<T, BrokerError>> {
    Box::pin(async move { Ok(value) })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::broker::Publication;

    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);

    impl Deliver for Events {
        fn deliver(&self, _: &Publication) {}
        fn member(&self, channel: &str, event: MemberEvent, member: &[u8]) {
            let member: Member = serde_json::from_slice(member).expect("member JSON");
            lock(&self.0).push(format!("{} {channel} {}", event.as_str(), member.client));
        }
    }

    fn member(client: &str, user: Option<&str>) -> Member {
        Member {
            client: client.to_owned(),
            user: user.map(str::to_owned),
            info: None,
        }
    }

    #[test]
    fn a_reconnect_within_the_grace_takes_the_member_over_silently() {
        let events = Events::default();
        let presence = MemoryPresence::default();
        assert!(
            presence
                .join("room", member("a", Some("ann")), &events)
                .announced
        );
        assert!(presence.join("room", member("b", None), &events).announced);
        let grace = Departure::Grace(Duration::from_secs(60));
        assert_eq!(presence.leave("room", "a", grace, &events), None);
        assert_eq!(presence.leave("room", "b", grace, &events), None);
        assert_eq!(
            presence.read("room", 10).count,
            2,
            "listed during the grace"
        );
        // Ann comes back on a new connection: she continues the old member.
        let joined = presence.join("room", member("a2", Some("ann")), &events);
        assert_eq!(
            (joined.member.client.as_str(), joined.announced),
            ("a", false)
        );
        // A user-less member cannot be recognised: a new join is a new member.
        assert!(presence.join("room", member("b2", None), &events).announced);
        assert_eq!(
            presence.leave("room", "a", Departure::Now, &events),
            Some(member("a", Some("ann")))
        );
        assert_eq!(
            *lock(&events.0),
            ["join room a", "join room b", "join room b2", "leave room a"]
        );
        assert_eq!(presence.read("room", 10).count, 2);
    }

    #[test]
    fn a_grace_that_ends_is_swept_once_and_reads_are_bounded() {
        let events = Events::default();
        let presence = MemoryPresence::default();
        for n in 0..5 {
            presence.join("room", member(&format!("c{n}"), Some("u")), &events);
        }
        let page = presence.read("room", 3);
        assert_eq!(
            (page.count, page.members.len(), page.truncated),
            (5, 3, true)
        );
        assert!(!presence.read("room", 5).truncated);
        presence.leave("room", "c0", Departure::Grace(Duration::ZERO), &events);
        let left = presence.sweep(&events);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].member.client, "c0");
        assert!(presence.sweep(&events).is_empty(), "swept once");
        assert_eq!(presence.read("room", 10).count, 4);
        assert_eq!(presence.read("other", 10), PresencePage::default());
    }
}
