//! The requests of protocol v1, one handler per request type, as the session runs them:
//! `subscribe` (also the re-sync of a subscription the connection holds), `unsubscribe`,
//! `publish`, `ping`, `refresh` and `presence` (in `presence`), with one permission check for
//! the token's claims.
//!
//! A handler answers on the connection's outbox, with the reply or an `error`; only abuse
//! (publishing far beyond the rate limit) closes the connection from here.

use wirehub_core::{Departure, SessionRef};
use wirehub_protocol::{
    ClientMessage, CloseCode, ErrorCode, ServerMessage, StreamPosition, parse_client_message,
};

use super::{Closer, Session};
use crate::metrics::Metrics;
use crate::rate::Verdict;

/// What a token's claims may allow on a channel.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Subscribe,
    Publish,
}

impl Action {
    /// The action in the `forbidden` error's message.
    fn gerund(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribing",
            Action::Publish => "publishing",
        }
    }
}

impl Session {
    /// Handles one text frame: parses the request and runs its handler.
    pub(super) async fn on_text(&mut self, text: &[u8]) {
        Metrics::add(&self.metrics().messages_in_total, 1);
        let Ok(text) = std::str::from_utf8(text) else {
            // The decoder validated UTF-8 already; this cannot happen.
            return self.send_error(None, ErrorCode::InvalidJson, "text frame is not UTF-8");
        };
        let request = match parse_client_message(text) {
            Ok(request) => request,
            Err(err) => return self.send_error(err.id, err.code, &err.message),
        };
        match request {
            ClientMessage::Subscribe { id, channel, since } => {
                self.on_subscribe(id, &channel, since).await;
            }
            ClientMessage::Unsubscribe { id, channel } => self.on_unsubscribe(id, &channel).await,
            ClientMessage::Publish {
                id,
                channel,
                data,
                idempotency_key,
            } => {
                self.on_publish(id, &channel, data.get(), idempotency_key.as_deref())
                    .await;
            }
            ClientMessage::Ping { id } => self.on_ping(id),
            ClientMessage::Refresh { id, token } => self.on_refresh(id, &token).await,
            ClientMessage::Presence { id, channel } => self.on_presence(id, &channel).await,
        }
    }

    /// Whether the connection's token allows `action` on `channel` (always, without
    /// authentication); answers `forbidden` when it does not.
    pub(super) fn authorize(&mut self, id: Option<u64>, action: Action, channel: &str) -> bool {
        let allowed = self.claims.as_ref().is_none_or(|claims| match action {
            Action::Subscribe => claims.may_subscribe(channel),
            Action::Publish => claims.may_publish(channel),
        });
        if !allowed {
            self.send_error(
                id,
                ErrorCode::Forbidden,
                &format!(
                    "the token does not allow {} to {channel:?}",
                    action.gerund()
                ),
            );
        }
        allowed
    }

    /// `subscribe`: a new subscription, or, with `since` on a channel the connection is
    /// subscribed to already, a re-sync: the subscription is replaced by one that replays
    /// from `since` and then goes on live (how a client recovers after a `gap`). Frames of
    /// the old subscription that were queued before the request still go out, before the new
    /// `subscribed` reply.
    async fn on_subscribe(
        &mut self,
        id: Option<u64>,
        channel: &str,
        since: Option<StreamPosition>,
    ) {
        let resync = self.subscriptions.contains(channel);
        if resync && since.is_none() {
            return self.send_error(
                id,
                ErrorCode::AlreadySubscribed,
                &format!("already subscribed to {channel:?}"),
            );
        }
        let max = self.state.config.max_subscriptions;
        if !resync && self.subscriptions.len() >= max {
            return self.send_error(
                id,
                ErrorCode::TooManySubscriptions,
                &format!("a connection may hold {max} subscriptions"),
            );
        }
        if !self.authorize(id, Action::Subscribe, channel) {
            return;
        }
        if resync {
            self.subscriptions.remove(channel);
            // The old subscription is gone from the fan-out even when releasing the broker's
            // watch fails; the new one takes a watch of its own.
            if let Err(err) = self.state.hub.unsubscribe(channel, self.id).await {
                warn_release(channel, &err);
            }
        }
        let session = SessionRef {
            id: self.id,
            outbox: self.outbox.clone(),
        };
        match self.state.hub.subscribe(&session, channel, id, since).await {
            Ok(subscribed) => {
                Metrics::add(&self.metrics().replayed_total, subscribed.replayed as u64);
                self.subscriptions.insert(channel.to_owned());
                if !resync {
                    self.state.activity.subscribed(&self.client, channel);
                }
                // A re-sync keeps the member it had.
                self.presence_join(channel).await;
            }
            Err(err) => {
                if resync {
                    // The re-sync failed: the subscription it replaced is gone.
                    self.state.activity.unsubscribed(&self.client, channel);
                    self.presence_leave(channel, Departure::Now).await;
                }
                self.send_error(id, err.code(), &err.to_string());
            }
        }
    }

    /// `unsubscribe`.
    async fn on_unsubscribe(&mut self, id: Option<u64>, channel: &str) {
        if !self.subscriptions.remove(channel) {
            return self.send_error(
                id,
                ErrorCode::NotSubscribed,
                &format!("not subscribed to {channel:?}"),
            );
        }
        let released = self.state.hub.unsubscribe(channel, self.id).await;
        // Gone from the fan-out either way.
        self.state.activity.unsubscribed(&self.client, channel);
        // After the unsubscribe: the leave goes to the others only.
        self.presence_leave(channel, Departure::Now).await;
        match released {
            Ok(()) => self.send(&ServerMessage::Unsubscribed {
                id,
                channel: channel.to_owned(),
            }),
            Err(err) => self.send_error(id, err.code(), &err.to_string()),
        }
    }

    /// `publish`, within the connection's rate limit; far beyond it the connection closes.
    async fn on_publish(
        &mut self,
        id: Option<u64>,
        channel: &str,
        data: &str,
        idempotency_key: Option<&str>,
    ) {
        if !self.authorize(id, Action::Publish, channel) {
            return;
        }
        match self.publish_limiter.check(std::time::Instant::now()) {
            Verdict::Allowed => {}
            verdict => {
                self.send_error(
                    id,
                    ErrorCode::RateLimited,
                    &format!(
                        "more than {} publishes per second on this connection",
                        self.state.config.publish_rate
                    ),
                );
                if verdict == Verdict::Abuse {
                    tracing::warn!("publishing far beyond the rate limit; closing");
                    self.start_close(CloseCode::PolicyViolation, Closer::Server);
                }
                return;
            }
        }
        match self
            .state
            .hub
            .publish(channel, data.as_bytes(), idempotency_key)
            .await
        {
            Ok(published) => {
                let counter = if published.duplicate {
                    &self.metrics().publish_duplicates_total
                } else {
                    &self.metrics().published_total
                };
                Metrics::add(counter, 1);
                self.send(&ServerMessage::Ack {
                    id,
                    offset: published.offset,
                    duplicate: published.duplicate,
                });
            }
            Err(err) => self.send_error(id, err.code(), &err.to_string()),
        }
    }

    /// `ping`: the app-level liveness check.
    fn on_ping(&mut self, id: Option<u64>) {
        self.send(&ServerMessage::Pong { id });
    }

    /// `refresh`: replaces the connection's token; subscriptions the new token no longer
    /// allows end (each with an `unsubscribed`).
    async fn on_refresh(&mut self, id: Option<u64>, token: &str) {
        let Some(authenticator) = &self.state.authenticator else {
            return self.send_error(
                id,
                ErrorCode::Unauthorized,
                "this server does not use tokens (no --jwt-secret or --jwt-public-key)",
            );
        };
        let claims = match authenticator.verify(token) {
            Ok(claims) => claims,
            Err(err) => return self.send_error(id, ErrorCode::Unauthorized, &err.to_string()),
        };
        if let Some(old) = &self.claims
            && old.sub != claims.sub
        {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "a refreshed token must be for the same user (sub)",
            );
        }
        let revoked: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|channel| !claims.may_subscribe(channel))
            .cloned()
            .collect();
        for channel in revoked {
            self.subscriptions.remove(&channel);
            if let Err(err) = self.state.hub.unsubscribe(&channel, self.id).await {
                warn_release(&channel, &err);
            }
            self.state.activity.unsubscribed(&self.client, &channel);
            self.presence_leave(&channel, Departure::Now).await;
            self.send(&ServerMessage::Unsubscribed { id: None, channel });
        }
        let expires = claims.exp;
        self.set_claims(Some(claims));
        self.send(&ServerMessage::Refreshed { id, expires });
    }
}

/// Logs a subscription whose release failed at the broker (the fan-out let go of it anyway).
fn warn_release(channel: &str, err: &wirehub_core::HubError) {
    tracing::warn!(%channel, error = %err, "releasing subscription failed");
}
