//! A session's presence: each subscription to a presence channel makes the connection a
//! member (user and `info` from its token), and the `presence` request reads the members.
//!
//! A member leaves at once when the client unsubscribes, closes the connection itself, or is
//! refused for good (close codes 4000–4099, a revoked permission); in every other ending
//! (connection lost, heartbeat timeout, shutdown, slow consumer) it leaves after the
//! `presence_grace`, unless the same user joins the channel again within it.

use wirehub_core::Departure;
use wirehub_protocol::{CloseCode, ErrorCode, Member, ServerMessage};

use super::{End, Session};
use crate::presence::{disabled_message, joined, left, reply};

impl Session {
    /// Makes the connection a member of `channel` (just subscribed), when it has presence.
    /// A broker failure is logged: the subscription stays, the connection is not listed.
    pub(super) async fn presence_join(&mut self, channel: &str) {
        if !self.state.hub.presence_enabled(channel) || self.presence.contains_key(channel) {
            return;
        }
        let member = Member {
            client: self.name.clone(),
            user: self.claims.as_ref().map(|claims| claims.sub.clone()),
            info: self.claims.as_ref().and_then(|claims| claims.info.clone()),
        };
        match self.state.hub.presence_join(channel, member).await {
            Ok(done) => {
                if done.announced {
                    joined(&self.state, channel, &done.member);
                }
                self.presence.insert(channel.to_owned(), done.member.client);
            }
            Err(err) => tracing::warn!(%channel, error = %err, "joining the presence failed"),
        }
    }

    /// The connection stops being a member of `channel`, if it was one.
    pub(super) async fn presence_leave(&mut self, channel: &str, departure: Departure) {
        let Some(client) = self.presence.remove(channel) else {
            return;
        };
        match self
            .state
            .hub
            .presence_leave(channel, &client, departure)
            .await
        {
            Ok(Some(member)) => left(&self.state, channel, member),
            Ok(None) => {}
            Err(err) => tracing::warn!(%channel, error = %err, "leaving the presence failed"),
        }
    }

    /// The connection ended: each of its members leaves, at once or after the grace.
    pub(super) async fn presence_end(&mut self, end: &End) {
        let departure = self.departure(end);
        let channels: Vec<String> = self.presence.keys().cloned().collect();
        for channel in channels {
            self.presence_leave(&channel, departure).await;
        }
    }

    /// How the members of a connection that ended with `end` leave: at once, or after the
    /// grace.
    pub(super) fn departure(&self, end: &End) -> Departure {
        match end {
            End::Closed(code) | End::CloseTimeout(code) if leaves_at_once(*code) => Departure::Now,
            _ => Departure::Grace(self.state.config.presence_grace),
        }
    }

    /// `presence`: the channel's members, for a connection allowed to subscribe to it.
    pub(super) async fn on_presence(&mut self, id: Option<u64>, channel: &str) {
        if !self.state.hub.presence_enabled(channel) {
            return self.send_error(id, ErrorCode::PresenceDisabled, &disabled_message(channel));
        }
        if !self.authorize(id, super::requests::Action::Subscribe, channel) {
            return;
        }
        let max = self.state.config.presence_max_members;
        match self.state.hub.presence(channel, max).await {
            Ok(page) => {
                let page = reply(channel.to_owned(), page);
                self.send(&ServerMessage::Presence {
                    id,
                    channel: page.channel,
                    count: page.count,
                    members: page.members,
                    truncated: page.truncated,
                });
            }
            Err(err) => self.send_error(id, err.code(), &err.to_string()),
        }
    }
}

/// Whether a connection closed with `code` leaves at once: the client closed it (our close
/// echoes theirs as 1000), or it was refused for good (4000–4099: it will not come back).
fn leaves_at_once(code: CloseCode) -> bool {
    code == CloseCode::Normal || (4000..4100).contains(&code.code())
}
