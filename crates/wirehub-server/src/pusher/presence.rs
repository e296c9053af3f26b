//! Pusher presence channels on the hub's presence: each Pusher connection subscribed to a
//! `presence-` channel is a member (its socket id as the member's `client`, the
//! `channel_data`'s `user_id` and `user_info` as its user and info), kept by the broker like
//! any member: cluster-wide on Redis, with leases, reaped after a node dies, and a grace in
//! which a reconnecting user is taken over without a leave and a join.
//!
//! Pusher speaks of users, not connections: `member_added` when a user's first connection
//! joins, `member_removed` when the last one has left. Each node keeps a roster of the users
//! of the presence channels that its Pusher connections are subscribed to, seeded from a read
//! of the members when a connection subscribes and kept by the hub's `join`/`leave`
//! announcements, which every node gets once per transition. A user's first connection in
//! the roster becomes `member_added`, its last one gone `member_removed`, each sent once per
//! node to the local Pusher subscribers (not to the connection that joined).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value, json};
use wirehub_protocol::{Member, MemberEvent};

use super::Presence;

/// The users of one presence channel, as this node knows them.
#[derive(Debug, Default)]
struct Roster {
    /// Local Pusher subscriptions to the channel (the roster goes with the last).
    subscribers: usize,
    /// User id → its info and its connections (members' `client`).
    users: BTreeMap<String, User>,
}

#[derive(Debug)]
struct User {
    info: Value,
    clients: HashSet<String>,
}

/// What a transition is for Pusher clients.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// A user's first connection: `member_added`, not sent to `client`.
    Added {
        user_id: String,
        info: Value,
        client: String,
    },
    /// A user's last connection left: `member_removed`.
    Removed { user_id: String },
}

/// The rosters of a node's Pusher presence channels, by hub channel.
#[derive(Debug, Default)]
pub(crate) struct Rosters {
    channels: Mutex<HashMap<String, Roster>>,
}

impl Rosters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Roster>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A local Pusher connection starts subscribing to `channel`: its roster is kept from
    /// now on (announcements that arrive before the read of the members count too).
    pub(crate) fn open(&self, channel: &str) {
        self.lock()
            .entry(channel.to_owned())
            .or_default()
            .subscribers += 1;
    }

    /// A local Pusher connection's subscription to `channel` ended (or failed).
    pub(crate) fn close(&self, channel: &str) {
        let mut channels = self.lock();
        if let Some(roster) = channels.get_mut(channel) {
            roster.subscribers = roster.subscribers.saturating_sub(1);
            if roster.subscribers == 0 {
                channels.remove(channel);
            }
        }
    }

    /// Adds the members read from the broker (a union: announcements already applied stay).
    pub(crate) fn seed(&self, channel: &str, members: &[Member]) {
        let mut channels = self.lock();
        let Some(roster) = channels.get_mut(channel) else {
            return;
        };
        for member in members {
            if let Some(user_id) = &member.user {
                roster.add(user_id, member.info.clone(), &member.client);
            }
        }
    }

    /// The channel's users, as `subscription_succeeded` carries them.
    pub(crate) fn presence(&self, channel: &str) -> Presence {
        let channels = self.lock();
        let users = channels.get(channel).map(|roster| &roster.users);
        Presence {
            ids: users.into_iter().flat_map(|u| u.keys().cloned()).collect(),
            hash: users
                .into_iter()
                .flat_map(|u| u.iter().map(|(id, user)| (id.clone(), user.info.clone())))
                .collect::<Map<String, Value>>(),
        }
    }

    /// Applies one announcement (`member`: the member's JSON text); `None` when it changes
    /// nothing for Pusher clients (another connection of a listed user, a member without a
    /// user, a channel without local Pusher subscribers).
    pub(crate) fn apply(&self, channel: &str, event: MemberEvent, member: &[u8]) -> Option<Change> {
        let member: Member = serde_json::from_slice(member).ok()?;
        let user_id = member.user?;
        let mut channels = self.lock();
        let roster = channels.get_mut(channel)?;
        match event {
            MemberEvent::Join => {
                let info = member.info.unwrap_or(Value::Null);
                roster
                    .add(&user_id, Some(info.clone()), &member.client)
                    .then_some(Change::Added {
                        user_id,
                        info,
                        client: member.client,
                    })
            }
            MemberEvent::Leave => {
                let user = roster.users.get_mut(&user_id)?;
                if !user.clients.remove(&member.client) || !user.clients.is_empty() {
                    return None;
                }
                roster.users.remove(&user_id);
                Some(Change::Removed { user_id })
            }
        }
    }
}

impl Roster {
    /// Adds a connection of `user_id`; true when it is the user's first.
    fn add(&mut self, user_id: &str, info: Option<Value>, client: &str) -> bool {
        let user = self
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| User {
                info: Value::Null,
                clients: HashSet::new(),
            });
        let first = user.clients.is_empty();
        if first && let Some(info) = info {
            user.info = info;
        }
        user.clients.insert(client.to_owned()) && first
    }
}

/// The users of a presence channel's members (a read of the broker), as the HTTP API lists
/// them: each user once, in the order of their ids.
pub(crate) fn users_of(members: &[Member]) -> Vec<String> {
    let mut users: Vec<String> = members.iter().filter_map(|m| m.user.clone()).collect();
    users.sort();
    users.dedup();
    users
}

/// The `data` of `pusher_internal:member_added` / `member_removed`.
pub(crate) fn change_data(change: &Change) -> (&'static str, Value) {
    match change {
        Change::Added { user_id, info, .. } => (
            "pusher_internal:member_added",
            json!({ "user_id": user_id, "user_info": info }),
        ),
        Change::Removed { user_id } => (
            "pusher_internal:member_removed",
            json!({ "user_id": user_id }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, user: &str) -> Vec<u8> {
        Member {
            client: client.to_owned(),
            user: Some(user.to_owned()),
            info: Some(json!({ "name": user })),
        }
        .to_json()
        .into_bytes()
    }

    #[test]
    fn a_users_first_connection_is_added_and_its_last_removed_once() {
        let rosters = Rosters::default();
        rosters.open("presence-room");
        let added = rosters.apply("presence-room", MemberEvent::Join, &member("1.1", "ann"));
        assert!(matches!(added, Some(Change::Added { ref user_id, .. }) if user_id == "ann"));
        // A second connection of the same user, and the same announcement twice: nothing.
        assert_eq!(
            rosters.apply("presence-room", MemberEvent::Join, &member("2.1", "ann")),
            None
        );
        assert_eq!(
            rosters.apply("presence-room", MemberEvent::Join, &member("2.1", "ann")),
            None
        );
        assert_eq!(
            rosters.apply("presence-room", MemberEvent::Leave, &member("1.1", "ann")),
            None
        );
        assert_eq!(
            rosters.apply("presence-room", MemberEvent::Leave, &member("2.1", "ann")),
            Some(Change::Removed {
                user_id: "ann".into()
            })
        );
        assert_eq!(
            rosters.apply("presence-room", MemberEvent::Leave, &member("2.1", "ann")),
            None
        );
    }

    #[test]
    fn seeded_members_are_listed_and_a_channel_without_local_subscribers_is_not_kept() {
        let rosters = Rosters::default();
        assert_eq!(
            rosters.apply("presence-x", MemberEvent::Join, &member("1.1", "ann")),
            None
        );
        rosters.open("presence-x");
        let read: Vec<Member> = ["ann", "bob", "ann"]
            .iter()
            .enumerate()
            .map(|(i, user)| Member {
                client: format!("1.{i}"),
                user: Some((*user).to_owned()),
                info: None,
            })
            .collect();
        rosters.seed("presence-x", &read);
        assert_eq!(rosters.presence("presence-x").ids, vec!["ann", "bob"]);
        assert_eq!(users_of(&read), vec!["ann", "bob"]);
        rosters.close("presence-x");
        assert!(rosters.presence("presence-x").ids.is_empty());
    }
}
