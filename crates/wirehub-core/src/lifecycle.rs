//! Lifecycle events (connections, subscriptions, channel occupancy, presence members) and the
//! seam through which they leave the core: a [`LifecycleSink`], e.g. the server's webhook
//! delivery. Emitting never blocks and never fails; a sink that cannot keep up counts and
//! reports what it could not take.

use std::fmt;
use std::sync::Arc;

use wirehub_protocol::Member;

/// Something that happened that a backend may want to know about. Each transition that the
/// contract says is "sent by one node" is emitted by one node only.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleEvent {
    /// A WebSocket connection was established.
    Connect {
        /// Its session id.
        client: Arc<str>,
        /// The token's `sub`, when it had a token.
        user: Option<Arc<str>>,
    },
    /// A connection ended.
    Disconnect {
        /// Its session id.
        client: Arc<str>,
        /// The token's `sub`, when it had a token.
        user: Option<Arc<str>>,
        /// The close code (1006 when the connection was lost without a close).
        code: u16,
        /// Why, for people.
        reason: String,
    },
    /// A connection subscribed to a channel.
    Subscribe {
        /// The session id.
        client: Arc<str>,
        /// The channel.
        channel: Arc<str>,
    },
    /// A connection's subscription ended (unsubscribe or disconnect).
    Unsubscribe {
        /// The session id.
        client: Arc<str>,
        /// The channel.
        channel: Arc<str>,
    },
    /// The channel got its first subscriber anywhere in the cluster.
    ChannelOccupied {
        /// The channel.
        channel: Arc<str>,
    },
    /// The channel's last subscriber anywhere in the cluster is gone.
    ChannelVacated {
        /// The channel.
        channel: Arc<str>,
    },
    /// A member joined a presence channel.
    MemberJoin {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        member: Member,
    },
    /// A member left a presence channel (or was reaped after its lease).
    MemberLeave {
        /// The channel.
        channel: Arc<str>,
        /// Who.
        member: Member,
    },
    /// An event of another webhook format (a Pusher app's `client_event`, `member_added`,
    /// ...), as its JSON text, sent as is: emitted straight to the delivery that sends it.
    Foreign {
        /// The event's JSON text.
        json: Arc<str>,
    },
}

/// Where lifecycle events go. `emit` is called on hot-ish paths (connect, subscribe): it must
/// not block or await; queue and return.
pub trait LifecycleSink: Send + Sync + fmt::Debug {
    /// Takes one event.
    fn emit(&self, event: LifecycleEvent);
}

/// A cheap, cloneable handle to the server's lifecycle sink, or to none (the default: events
/// are not even built then, see [`Lifecycle::is_on`]).
#[derive(Clone, Default)]
pub struct Lifecycle(Option<Arc<dyn LifecycleSink>>);

impl Lifecycle {
    /// Events go to `sink`.
    #[must_use]
    pub fn new(sink: Arc<dyn LifecycleSink>) -> Self {
        Lifecycle(Some(sink))
    }

    /// Whether anything listens; callers skip building events when not.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Hands `event` to the sink, if any.
    pub fn emit(&self, event: LifecycleEvent) {
        if let Some(sink) = &self.0 {
            sink.emit(event);
        }
    }

    /// Builds the event only when a sink listens.
    pub fn emit_with(&self, event: impl FnOnce() -> LifecycleEvent) {
        if let Some(sink) = &self.0 {
            sink.emit(event());
        }
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(sink) => f.debug_tuple("Lifecycle").field(sink).finish(),
            None => f.write_str("Lifecycle(off)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<LifecycleEvent>>);

    impl LifecycleSink for Recorder {
        fn emit(&self, event: LifecycleEvent) {
            self.0.lock().expect("not poisoned").push(event);
        }
    }

    #[test]
    fn events_reach_the_sink_and_are_not_built_without_one() {
        let off = Lifecycle::default();
        assert!(!off.is_on());
        off.emit_with(|| unreachable!("no sink: the event is not built"));

        let recorder = Arc::new(Recorder::default());
        let on = Lifecycle::new(recorder.clone());
        assert!(on.is_on());
        let event = LifecycleEvent::ChannelOccupied {
            channel: "room:1".into(),
        };
        on.emit_with(|| event.clone());
        assert_eq!(*recorder.0.lock().expect("not poisoned"), vec![event]);
    }
}
