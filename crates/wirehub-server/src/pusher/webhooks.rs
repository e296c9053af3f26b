//! The apps' webhooks in Pusher's format, on the server's webhook delivery (`crate::webhooks`:
//! a bounded queue, batches, retries with backoff, the dead-letter file, the metrics, with
//! the target label `pusher:APP_ID`): `POST` of `{"time_ms": T, "events": [EVENT...]}` with
//! `X-Pusher-Key` (the app key) and `X-Pusher-Signature` (hex HMAC-SHA256 of the body with
//! the app secret), for `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed` and `client_event`. Each event is queued as a foreign lifecycle event
//! holding its Pusher JSON, straight into its app's delivery.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_core::{LifecycleEvent, LifecycleSink};

use super::config::PusherApp;
use super::sign;
use crate::webhooks::{Encoded, Envelope, WebhookConfig, WebhookFormat};

/// Pusher's webhook body and headers for one app.
#[derive(Debug)]
struct PusherFormat {
    key: HeaderValue,
    secret: String,
}

impl WebhookFormat for PusherFormat {
    fn accepts(&self, event: &LifecycleEvent) -> bool {
        matches!(event, LifecycleEvent::Foreign { .. })
    }

    fn encode(&self, batch: &[Envelope]) -> Encoded {
        // `time_ms` is the first event's, so that a retried batch is the same request.
        let time_ms = batch.first().map_or(0, |envelope| envelope.time_ms);
        let mut body = format!("{{\"time_ms\":{time_ms},\"events\":[");
        let mut first = true;
        for envelope in batch {
            if let LifecycleEvent::Foreign { json } = &envelope.event {
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str(json);
            }
        }
        body.push_str("]}");
        let mut headers = vec![(HeaderName::from_static("x-pusher-key"), self.key.clone())];
        if let Ok(signature) = HeaderValue::from_str(&sign::sign(&self.secret, body.as_bytes())) {
            headers.push((HeaderName::from_static("x-pusher-signature"), signature));
        }
        Encoded {
            body: body.into_bytes(),
            headers,
        }
    }
}

/// The node's Pusher webhook deliveries, one per app with a webhook URL.
#[derive(Debug, Default)]
pub(crate) struct Webhooks {
    /// Per app (by index): its delivery; set once when the server starts.
    deliveries: OnceLock<Vec<Option<Arc<crate::webhooks::Webhooks>>>>,
    on: bool,
}

impl Webhooks {
    pub(crate) fn new(apps: &[PusherApp]) -> Self {
        Webhooks {
            deliveries: OnceLock::new(),
            on: apps.iter().any(|app| app.webhook_url.is_some()),
        }
    }

    /// Whether any app has a webhook URL.
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// Starts the deliveries: each app's with the server's webhook settings when it has
    /// some (`base`: queue, batches, retries; the dead-letter file gets the app's id in its
    /// name), the defaults otherwise. Returns them, for the metrics and the shutdown.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(crate) fn start(
        &self,
        apps: &[PusherApp],
        base: Option<&WebhookConfig>,
        stop_after: Duration,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Arc<crate::webhooks::Webhooks>>, String> {
        let mut started = Vec::new();
        let mut deliveries = Vec::with_capacity(apps.len());
        for app in apps {
            let Some(url) = &app.webhook_url else {
                deliveries.push(None);
                continue;
            };
            let mut config = match base {
                Some(base) => WebhookConfig {
                    url: url.clone(),
                    ..base.clone()
                },
                None => WebhookConfig::new(url.clone()),
            };
            config.dead_letter = dead_letter_for(&config.dead_letter, &app.id);
            let format = Arc::new(PusherFormat {
                key: HeaderValue::from_str(&app.key).map_err(|err| err.to_string())?,
                secret: app.secret.clone(),
            });
            let delivery = crate::webhooks::Webhooks::start(
                format!("pusher:{}", app.id),
                config.flush_window(stop_after),
                format,
                tracker,
                shutdown.clone(),
            )
            .map_err(|err| err.to_string())?;
            started.push(delivery.clone());
            deliveries.push(Some(delivery));
        }
        let _ = self.deliveries.set(deliveries);
        Ok(started)
    }

    /// Queues one event of `app` (nothing when the app has no webhook URL).
    pub(crate) fn emit(&self, app: usize, event: Value) {
        if let Some(Some(delivery)) = self.deliveries.get().and_then(|all| all.get(app)) {
            delivery.emit(LifecycleEvent::Foreign {
                json: Arc::from(event.to_string()),
            });
        }
    }
}

/// `wirehub-webhooks.dead.jsonl` → `wirehub-webhooks.pusher-ID.dead.jsonl`, beside it.
fn dead_letter_for(base: &std::path::Path, app_id: &str) -> std::path::PathBuf {
    let name = base
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("wirehub-webhooks.dead.jsonl");
    let safe: String = app_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let renamed = match name.split_once('.') {
        Some((stem, rest)) => format!("{stem}.pusher-{safe}.{rest}"),
        None => format!("{name}.pusher-{safe}"),
    };
    base.with_file_name(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_pushers_body_signed_with_the_app_secret() {
        let format = PusherFormat {
            key: HeaderValue::from_static("app-key"),
            secret: "app-secret".into(),
        };
        let envelope = |json: &str| Envelope {
            id: "n-1".into(),
            time_ms: 7,
            event: LifecycleEvent::Foreign {
                json: Arc::from(json),
            },
        };
        let encoded = format.encode(&[
            envelope(r#"{"name":"channel_occupied","channel":"a"}"#),
            envelope(r#"{"name":"channel_vacated","channel":"a"}"#),
        ]);
        let body = String::from_utf8(encoded.body.clone()).expect("UTF-8");
        assert_eq!(
            body,
            r#"{"time_ms":7,"events":[{"name":"channel_occupied","channel":"a"},{"name":"channel_vacated","channel":"a"}]}"#
        );
        let header = |name: &str| {
            encoded
                .headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.to_str().expect("ASCII").to_owned())
        };
        assert_eq!(header("x-pusher-key").as_deref(), Some("app-key"));
        assert_eq!(
            header("x-pusher-signature"),
            Some(sign::sign("app-secret", body.as_bytes()))
        );
        assert!(!format.accepts(&LifecycleEvent::ChannelOccupied {
            channel: Arc::from("a")
        }));
        assert_eq!(
            dead_letter_for(
                std::path::Path::new("/var/x/wirehub-webhooks.dead.jsonl"),
                "1"
            ),
            std::path::PathBuf::from("/var/x/wirehub-webhooks.pusher-1.dead.jsonl")
        );
    }
}
