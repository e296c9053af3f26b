//! The connection's log span names the session id the client got in `welcome`, so that a
//! user's session can be found in the logs. A test binary of its own: it installs the
//! process-wide subscriber that records the spans.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_tungstenite::MaybeTlsStream;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use wirehub_server::ServerConfig;
use wirehub_testkit::{TestServer, WsClient};

type Fields = HashMap<String, String>;

/// Records the fields of every span named `session`.
struct SessionSpans {
    next_id: AtomicU64,
    seen: Arc<Mutex<Vec<Fields>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for SessionSpans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        if span.metadata().name() == "session" {
            let mut fields = Fields::new();
            span.record(&mut Collect(&mut fields));
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(fields);
        }
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn issue_10_the_welcome_session_id_is_in_the_connection_span() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(SessionSpans {
        next_id: AtomicU64::new(1),
        seen: seen.clone(),
    })
    .expect("the only subscriber of this test binary");
    let server = TestServer::start(ServerConfig::new()).await;
    let (client, welcome) = WsClient::connect(&server.ws_url()).await;
    let session = welcome["session"].as_str().expect("session id").to_owned();
    let MaybeTlsStream::Plain(tcp) = client.stream.get_ref() else {
        panic!("a plain ws:// connection");
    };
    let local = tcp.local_addr().expect("local address");
    // The span is created before the welcome is queued, so it is recorded by now.
    let spans = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let span = spans
        .iter()
        .find(|fields| fields.get("session") == Some(&session))
        .unwrap_or_else(|| panic!("no session span with session={session} in {spans:?}"));
    assert_eq!(span.get("peer"), Some(&local.to_string()), "{span:?}");
    assert!(span.contains_key("id"), "{span:?}");
}
