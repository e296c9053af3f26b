//! What connections do that the rest of the cluster and the backend care about: every
//! protocol front end reports its connections and subscriptions here, once each, and this
//! turns them into lifecycle events (`connect`, `disconnect`, `subscribe`, `unsubscribe`),
//! the node's subscriber counts behind `channel_occupied` / `channel_vacated`, and the
//! registry of connections that `POST /api/disconnect` closes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wirehub_core::{Lifecycle, LifecycleEvent};

use crate::occupancy::Occupancy;

/// Closes one connection with a close code and reason (from any thread, without waiting).
pub(crate) type Kick = Arc<dyn Fn(u16, &str) + Send + Sync>;

/// Which connections an order closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// Every connection of this user (the token's `sub`).
    User(&'a str),
    /// The connection with this session id.
    Client(&'a str),
}

pub(crate) struct Activity {
    lifecycle: Lifecycle,
    occupancy: Arc<Occupancy>,
    sessions: Mutex<HashMap<Arc<str>, Registered>>,
}

struct Registered {
    user: Option<Arc<str>>,
    kick: Kick,
}

impl Activity {
    pub(crate) fn new(lifecycle: Lifecycle, occupancy: Arc<Occupancy>) -> Self {
        Activity {
            lifecycle,
            occupancy,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn occupancy(&self) -> &Arc<Occupancy> {
        &self.occupancy
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Registered>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection was established; `kick` closes it.
    /// The user a connection is known as from now on (a Pusher sign-in), for
    /// [`Activity::disconnect`] by user.
    pub(crate) fn set_user(&self, client: &Arc<str>, user: Arc<str>) {
        if let Some(registered) = self.sessions().get_mut(client) {
            registered.user = Some(user);
        }
    }

    pub(crate) fn connected(&self, client: &Arc<str>, user: Option<&Arc<str>>, kick: Kick) {
        self.sessions().insert(
            client.clone(),
            Registered {
                user: user.cloned(),
                kick,
            },
        );
        self.lifecycle.emit_with(|| LifecycleEvent::Connect {
            client: client.clone(),
            user: user.cloned(),
        });
    }

    /// A connection ended (after [`Activity::unsubscribed`] for each of its subscriptions).
    pub(crate) fn disconnected(
        &self,
        client: &Arc<str>,
        user: Option<&Arc<str>>,
        code: u16,
        reason: &str,
    ) {
        self.sessions().remove(client);
        self.lifecycle.emit_with(|| LifecycleEvent::Disconnect {
            client: client.clone(),
            user: user.cloned(),
            code,
            reason: reason.to_owned(),
        });
    }

    /// A connection subscribed to `channel`.
    pub(crate) fn subscribed(&self, client: &Arc<str>, channel: &str) {
        self.occupancy.add(channel);
        self.lifecycle.emit_with(|| LifecycleEvent::Subscribe {
            client: client.clone(),
            channel: channel.into(),
        });
    }

    /// A connection's subscription to `channel` ended (unsubscribe, revoked, disconnect).
    pub(crate) fn unsubscribed(&self, client: &Arc<str>, channel: &str) {
        self.occupancy.remove(channel);
        self.lifecycle.emit_with(|| LifecycleEvent::Unsubscribe {
            client: client.clone(),
            channel: channel.into(),
        });
    }

    /// Closes this node's connections that `target` names; returns how many.
    pub(crate) fn disconnect(&self, target: &Target<'_>, code: u16, reason: &str) -> u64 {
        let kicks: Vec<Kick> = {
            let sessions = self.sessions();
            match target {
                Target::Client(client) => sessions
                    .get(*client)
                    .map(|registered| registered.kick.clone())
                    .into_iter()
                    .collect(),
                Target::User(user) => sessions
                    .values()
                    .filter(|registered| registered.user.as_deref() == Some(*user))
                    .map(|registered| registered.kick.clone())
                    .collect(),
            }
        };
        for kick in &kicks {
            kick(code, reason);
        }
        kicks.len() as u64
    }
}

impl fmt::Debug for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activity")
            .field("lifecycle", &self.lifecycle)
            .field("connections", &self.sessions().len())
            .finish_non_exhaustive()
    }
}
