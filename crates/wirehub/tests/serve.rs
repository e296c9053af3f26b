//! `wirehub serve` as a process: embedded defaults, settings layering, exit codes, and a
//! graceful shutdown on SIGTERM/SIGINT that closes clients with 1001 and exits 0.

use std::process::Command;

use serde_json::json;
use wirehub_testkit::{ServerProcess, WsClient};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = ServerProcess::serve(BIN, &["--shutdown-drain", "200ms"]);
    let (mut client, welcome) = WsClient::connect(&server.ws_url()).await;
    assert_eq!(welcome["heartbeat"], 30.0, "default heartbeat");
    client.subscribe("bye").await;
    server.signal("TERM");
    let frame = client.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1001);
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut server = ServerProcess::serve(BIN, &["--shutdown-drain", "0s"]);
    let health = reqwest::get(server.http_url("/healthz"))
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
    server.signal("INT");
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn flags_beat_environment_beat_file() {
    let dir = std::env::temp_dir().join(format!("wirehub-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("wirehub.toml");
    std::fs::write(
        &file,
        "heartbeat_interval = \"7s\"\nmax_subscriptions = 1\n",
    )
    .expect("write");

    // File only.
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file);
    let server = ServerProcess::spawn(command);
    let (mut client, welcome) = WsClient::connect(&server.ws_url()).await;
    assert_eq!(welcome["heartbeat"], 7.0, "from the file");
    client.subscribe("one").await;
    client
        .send(&json!({"type": "subscribe", "channel": "two"}))
        .await;
    assert_eq!(
        client.expect("error").await["code"],
        "too_many_subscriptions",
        "from the file"
    );
    drop(server);

    // Environment over file.
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("WIREHUB_HEARTBEAT_INTERVAL", "9s");
    let server = ServerProcess::spawn(command);
    let (_client, welcome) = WsClient::connect(&server.ws_url()).await;
    assert_eq!(welcome["heartbeat"], 9.0, "env beats file");
    drop(server);

    // Flag over environment.
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "11s",
            "--config",
        ])
        .arg(&file)
        .env("WIREHUB_HEARTBEAT_INTERVAL", "9s");
    let server = ServerProcess::spawn(command);
    let (_client, welcome) = WsClient::connect(&server.ws_url()).await;
    assert_eq!(welcome["heartbeat"], 11.0, "flag beats env");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Flags, environment variables, and the field the error must name.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_settings_exit_2_naming_the_field() {
    let cases: [Case; 4] = [
        (&["--heartbeat-interval", "soon"], &[], "heartbeat-interval"),
        (&["--broker", "carrier-pigeon"], &[], "broker"),
        (
            &[],
            &[("WIREHUB_MAX_MESSAGE_SIZE", "lots")],
            "max-message-size",
        ),
        (&["--jwt-secret", "x"], &[], "jwt_secret"),
    ];
    for (args, env, field) in cases {
        let output = Command::new(BIN)
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{args:?}: {stderr}");
    }
    let dir = std::env::temp_dir().join(format!("wirehub-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "history_size = \"many\"\n").expect("write");
    let output = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("history_size"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_channel_tables_exit_2_naming_the_table() {
    let dir = std::env::temp_dir().join(format!("wirehub-bad-channels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("channels.toml");
    let cases = [
        (
            "[[channels]]\npattern = \"ticker:*\"\non_slow = \"latest\"\n\
             [[channels]]\npattern = \"chat:*\"\non_slow = \"sometimes\"\n",
            "channels[1].on_slow",
        ),
        ("[[channels]]\npattern = \"\"\n", "channels[0].pattern"),
        ("send_buffer = 10\n", "send_buffer"),
    ];
    for (text, field) in cases {
        std::fs::write(&file, text).expect("write");
        let output = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{text}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn channel_tables_and_send_buffer_are_accepted() {
    let dir = std::env::temp_dir().join(format!("wirehub-channels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("channels.toml");
    std::fs::write(
        &file,
        "[[channels]]\npattern = \"ticker:*\"\non_slow = \"latest\"\nhistory_size = 0\n",
    )
    .expect("write");
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--send-buffer",
            "0",
            "--config",
        ])
        .arg(&file);
    let server = ServerProcess::spawn(command);
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.subscribe("ticker:btc").await;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Polls `GET /readyz` until it answers `status`; returns the JSON body.
async fn wait_readyz(server: &ServerProcess, status: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + wirehub_testkit::TIMEOUT;
    loop {
        let response = reqwest::get(server.http_url("/readyz"))
            .await
            .expect("GET /readyz");
        let now = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("JSON");
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn issue_9_readyz_names_the_broker_while_redis_is_down_and_connections_stay() {
    let mut redis = wirehub_testkit::RedisServer::start();
    let url = redis.url();
    let server = ServerProcess::serve(
        BIN,
        &[
            "--broker",
            &url,
            "--redis-timeout",
            "300ms",
            "--redis-ping-interval",
            "200ms",
            "--redis-canary-interval",
            "200ms",
        ],
    );
    assert_eq!(wait_readyz(&server, 200).await, json!({"status": "ready"}));
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.subscribe("kept").await;

    redis.stop();
    let body = wait_readyz(&server, 503).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["broker"], "unreachable", "{body}");
    let health = reqwest::get(server.http_url("/healthz"))
        .await
        .expect("get");
    assert_eq!(health.status(), 200, "still alive");

    redis.restart();
    wait_readyz(&server, 200).await;
    // Redis came back empty: the subscription is told, on the same connection.
    assert_eq!(client.expect("gap").await["channel"], "kept");
    client.send(&json!({"type": "ping", "id": 2})).await;
    assert_eq!(client.expect("pong").await["id"], 2);
}

#[test]
fn config_prints_the_embedded_defaults() {
    let output = Command::new(BIN).arg("config").output().expect("run");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
    assert!(text.contains("heartbeat_interval = \"30s\""));
}

#[tokio::test]
async fn token_command_makes_tokens_that_serve_accepts() {
    let secret = "development-secret-0123456789";
    let output = Command::new(BIN)
        .args([
            "token",
            "--secret",
            secret,
            "--sub",
            "ann",
            "--subscribe",
            "room:*",
            "--ttl",
            "5m",
        ])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT");

    let server = ServerProcess::serve(BIN, &["--jwt-secret", secret]);
    let (mut client, _) = WsClient::connect(&format!("{}?token={token}", server.ws_url())).await;
    client.subscribe("room:1").await;
    client
        .send(&json!({"type": "subscribe", "channel": "hall"}))
        .await;
    assert_eq!(client.expect("error").await["code"], "forbidden");
    let refused = tokio_tungstenite::connect_async(server.ws_url()).await;
    assert!(refused.is_err(), "no token, no connection");

    let bad = Command::new(BIN)
        .args([
            "token",
            "--secret",
            secret,
            "--sub",
            "x",
            "--publish",
            "a b",
        ])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

mod tls_reload {
    use futures_util::{SinkExt, StreamExt};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_tungstenite::tungstenite::Message;
    use wirehub_testkit::{ServerProcess, TIMEOUT, read_fixture};

    fn der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem)
            .expect("a certificate")
            .as_ref()
            .to_vec()
    }

    /// A TLS connection trusting the test CA, and the certificate the server presented.
    async fn connect(server: &ServerProcess) -> (TlsStream<TcpStream>, Vec<u8>) {
        let stream = wirehub_testkit::tls_connect(server.addr(), &read_fixture("tls-ca.pem")).await;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("a server certificate")
            .as_ref()
            .to_vec();
        (stream, presented)
    }

    #[tokio::test]
    async fn sighup_reloads_the_certificate_without_dropping_connections() {
        let dir = std::env::temp_dir().join(format!("wirehub-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, read_fixture("tls-cert.pem")).expect("write");
        std::fs::write(&key, read_fixture("tls-key.pem")).expect("write");
        let server = ServerProcess::serve(
            super::BIN,
            &[
                "--tls-cert",
                cert.to_str().expect("utf-8"),
                "--tls-key",
                key.to_str().expect("utf-8"),
            ],
        );

        let (stream, presented) = connect(&server).await;
        assert_eq!(presented, der(&read_fixture("tls-cert.pem")));
        let (mut old, _) = tokio_tungstenite::client_async("wss://localhost/ws", stream)
            .await
            .expect("upgrade over TLS");
        let welcome = old.next().await.expect("a frame").expect("welcome");
        assert!(welcome.to_text().expect("text").contains("welcome"));

        // The renewed pair replaces the files, then SIGHUP.
        std::fs::write(&cert, read_fixture("tls-cert-2.pem")).expect("write");
        std::fs::write(&key, read_fixture("tls-key-2.pem")).expect("write");
        server.signal("HUP");
        server.wait_log("TLS certificate reloaded");
        let (_new, presented) = connect(&server).await;
        assert_eq!(
            presented,
            der(&read_fixture("tls-cert-2.pem")),
            "new handshakes use the new pair"
        );

        // The connection made before the reload is still served.
        old.send(Message::text(r#"{"type":"ping","id":7}"#))
            .await
            .expect("send");
        let pong = tokio::time::timeout(TIMEOUT, old.next())
            .await
            .expect("pong in time")
            .expect("a frame")
            .expect("pong");
        assert_eq!(pong.to_text().expect("text"), r#"{"type":"pong","id":7}"#);

        // A broken file is refused and the current pair kept.
        std::fs::write(&cert, b"not a certificate").expect("write");
        server.signal("HUP");
        server.wait_log("TLS reload failed");
        let (_again, presented) = connect(&server).await;
        assert_eq!(presented, der(&read_fixture("tls-cert-2.pem")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
