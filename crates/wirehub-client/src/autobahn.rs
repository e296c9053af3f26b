//! RFC 6455 and RFC 7692 conformance of the SDK's WebSocket as a client: Autobahn|Testsuite's
//! fuzzingserver plays its cases, and this test connects to it once per case through the same
//! [`crate::socket`] code the SDK uses (handshake, framing, masking, permessage-deflate,
//! replies to pings and closes) and echoes every message back. `scripts/autobahn-client.sh`
//! starts the fuzzingserver, runs this test and reads the report; without
//! `WIREHUB_AUTOBAHN_URL` the test is skipped (it is `#[ignore]`d).

use std::time::Duration;

use tokio::time::timeout;
use wirehub_ws::OpCode;

use crate::socket::{Incoming, Options, Socket, Target, Upgrade, open};

/// A case that has not ended by then is left (the suite judges it).
const CASE_LIMIT: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Socket {
    let target = Target::parse(url).expect("a ws:// URL");
    let options = Options {
        authorization: None,
        compression: true,
        max_message_size: 64 << 20,
        tls: None,
    };
    match open(&target, &options)
        .await
        .expect("the fuzzingserver answers")
    {
        Upgrade::Open(socket) => socket,
        Upgrade::Refused { status, .. } => panic!("{url}: HTTP {status}"),
    }
}

/// Echoes every message until the server closes, fails, or the case runs too long.
async fn echo(socket: &mut Socket) {
    loop {
        let (opcode, payload) = match timeout(CASE_LIMIT, socket.next()).await {
            Ok(Some(Ok(Incoming::Text(payload)))) => (OpCode::Text, payload),
            Ok(Some(Ok(Incoming::Binary(payload)))) => (OpCode::Binary, payload),
            _ => return,
        };
        if socket.send(opcode, &payload).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
#[ignore = "needs the Autobahn fuzzingserver: run scripts/autobahn-client.sh"]
async fn autobahn_fuzzingserver() {
    let base = std::env::var("WIREHUB_AUTOBAHN_URL")
        .expect("WIREHUB_AUTOBAHN_URL: the fuzzingserver's ws://127.0.0.1:PORT");
    let agent = std::env::var("WIREHUB_AUTOBAHN_AGENT").unwrap_or_else(|_| "client".into());
    let mut counter = connect(&format!("{base}/getCaseCount")).await;
    let count: u32 = match counter.next().await {
        Some(Ok(Incoming::Text(text))) => std::str::from_utf8(&text)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .expect("a case count"),
        other => panic!("no case count: {other:?}"),
    };
    let _ = timeout(Duration::from_secs(5), counter.close(1000, "")).await;
    for case in 1..=count {
        let mut socket = connect(&format!("{base}/runCase?case={case}&agent={agent}")).await;
        echo(&mut socket).await;
        // Sends what is queued (the close reply, or the close of a failed connection),
        // answers the server's close, and ends the stream.
        let _ = timeout(Duration::from_secs(5), socket.close(1000, "")).await;
    }
    let mut report = connect(&format!("{base}/updateReports?agent={agent}")).await;
    let _ = timeout(Duration::from_secs(30), report.next()).await;
    let _ = timeout(Duration::from_secs(5), report.close(1000, "")).await;
}
