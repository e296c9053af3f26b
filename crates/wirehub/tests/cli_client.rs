//! End to end: the built `wirehub` binary as server, subscriber and publisher.
//!
//! Every process is killed when its guard is dropped, every wait has a timeout, and no port
//! is fixed: the server listens on `127.0.0.1:0` and the test reads the address it logs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};

use wirehub_testkit::{ChildProcess, ServerProcess, TIMEOUT, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

fn wirehub() -> Command {
    Command::new(BIN)
}

/// Starts `wirehub serve` on `listen` with a short shutdown drain and extra flags.
fn serve_with(listen: &str, flags: &[&str]) -> ServerProcess {
    let mut args = vec!["--shutdown-drain", "100ms"];
    args.extend_from_slice(flags);
    ServerProcess::serve_on(BIN, listen, &args)
}

/// Starts `wirehub serve` on `listen`.
fn serve(listen: &str) -> ServerProcess {
    serve_with(listen, &[])
}

fn publish(url: &str, channel: &str, data: &str) -> Output {
    publish_with(url, channel, data, &[])
}

fn publish_with(url: &str, channel: &str, data: &str, flags: &[&str]) -> Output {
    wirehub()
        .args(["pub", url, channel, data, "--timeout", "5s"])
        .args(flags)
        .env_remove("WIREHUB_TOKEN")
        .output()
        .expect("run wirehub pub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sub_prints_compact_json_lines_and_survives_a_server_restart() {
    let mut server = serve("127.0.0.1:0");
    let addr = server.addr();
    let url = format!("ws://{addr}/ws");
    let sub = ChildProcess::spawn(wirehub().args([
        "sub",
        &url,
        "chat",
        "news",
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "500ms",
    ]));
    sub.wait_stderr("connected (session");

    let published = publish(&url, "chat", "{ \"text\" : \"hi there\", \"n\": [1, 2] }");
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(text(&published.stdout).trim(), "1");
    assert_eq!(
        sub.next_stdout("the first message"),
        r#"{"text":"hi there","n":[1,2]}"#
    );

    // A bare word is sent as a JSON string.
    let published = publish(&url, "news", "hello");
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(sub.next_stdout("the second message"), r#""hello""#);

    // Kill the server and start a new one on the same address: the subscriber reconnects,
    // resubscribes, reports what it could not recover, and prints new messages.
    server.kill();
    sub.wait_stderr("disconnected");
    let _restarted = serve(&addr.to_string());
    sub.wait_stderr("connected (session");
    sub.wait_stderr("lost while disconnected");
    let published = publish(&url, "chat", "42");
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(sub.next_stdout("the message after the restart"), "42");
    drop(server);
}

#[test]
fn pub_fails_clearly_when_it_cannot_publish() {
    // Nothing listens on this port any more: connection refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let refused = publish(&format!("ws://{addr}/ws"), "chat", "1");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot connect"),
        "{}",
        text(&refused.stderr)
    );

    let server = serve("127.0.0.1:0");
    let addr = server.addr();
    let invalid = publish(&format!("ws://{addr}/ws"), "not a channel", "1");
    assert!(!invalid.status.success());
    assert!(
        text(&invalid.stderr).contains("invalid channel"),
        "{}",
        text(&invalid.stderr)
    );

    let bad_url = publish("http://example.invalid/ws", "chat", "1");
    assert!(!bad_url.status.success());
}

/// A listener that answers every WebSocket upgrade with HTTP 401.
fn refuse_upgrades() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    addr
}

#[test]
fn sub_and_pub_exit_non_zero_when_the_server_refuses_them() {
    let addr = refuse_upgrades();
    let url = format!("ws://{addr}/ws");
    let mut sub = ChildProcess::spawn(wirehub().args(["sub", &url, "chat"]));
    let code = sub.wait().code();
    assert!(code.is_some_and(|code| code != 0), "exit {code:?}");
    sub.wait_stderr("401");

    let published = publish(&url, "chat", "1");
    assert!(!published.status.success());
    assert!(
        text(&published.stderr).contains("401"),
        "{}",
        text(&published.stderr)
    );
}

#[test]
fn tokens_are_sent_and_refusals_are_reported() {
    let secret = "cli-test-secret-of-32-characters";
    let server = serve_with("127.0.0.1:0", &["--jwt-secret", secret]);
    let addr = server.addr();
    let url = format!("ws://{addr}/ws");
    let token = wirehub()
        .args(["token", "--secret", secret, "--sub", "alice"])
        .args(["--subscribe", "chat:*", "--publish", "chat:*"])
        .output()
        .expect("run wirehub token");
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_owned();

    // Without a token the upgrade is refused with 401: the subscriber stops with an error.
    let mut anonymous = ChildProcess::spawn(
        wirehub()
            .args(["sub", &url, "chat:1"])
            .env_remove("WIREHUB_TOKEN"),
    );
    let code = anonymous.wait().code();
    assert!(code.is_some_and(|code| code != 0), "exit {code:?}");

    // With it, messages flow.
    let sub = ChildProcess::spawn(
        wirehub()
            .args(["sub", &url, "chat:1", "--token", &token])
            .env_remove("WIREHUB_TOKEN"),
    );
    sub.wait_stderr("connected (session");
    let published = publish_with(&url, "chat:1", "\"hi\"", &["--token", &token]);
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(sub.next_stdout("the message"), r#""hi""#);

    // A channel the token does not allow: the server's error code is reported.
    let forbidden = publish_with(&url, "news", "1", &["--token", &token]);
    assert!(!forbidden.status.success());
    assert!(
        text(&forbidden.stderr).contains("forbidden"),
        "{}",
        text(&forbidden.stderr)
    );
}

#[test]
fn help_explains_the_backoff() {
    let help = wirehub()
        .args(["sub", "--help"])
        .output()
        .expect("run wirehub sub --help");
    let help = text(&help.stdout);
    assert!(
        help.contains("random(0, min(MAX, INITIAL x MULTIPLIER^k))"),
        "{help}"
    );
    assert!(help.contains("--backoff-initial"), "{help}");
}

#[test]
fn sub_and_pub_speak_wss_with_a_ca_file() {
    let [cert, key, ca] = ["tls-cert.pem", "tls-key.pem", "tls-ca.pem"]
        .map(|name| fixture(name).to_string_lossy().into_owned());
    let server = serve_with("127.0.0.1:0", &["--tls-cert", &cert, "--tls-key", &key]);
    let addr = server.addr();
    let url = format!("wss://{addr}/ws");

    let untrusted = publish(&url, "chat", "1");
    assert!(!untrusted.status.success());
    assert!(
        text(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted.stderr)
    );

    let sub = ChildProcess::spawn(wirehub().args(["sub", &url, "chat", "--ca-cert", &ca]));
    sub.wait_stderr("connected (session");
    let published = publish_with(&url, "chat", "\"secret\"", &["--ca-cert", &ca]);
    assert!(published.status.success(), "{}", text(&published.stderr));
    assert_eq!(sub.next_stdout("the message over wss"), r#""secret""#);

    let missing = publish_with(&url, "chat", "1", &["--ca-cert", "/nonexistent/ca.pem"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("--ca-cert"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn pub_with_an_idempotency_key_publishes_at_most_once() {
    let server = serve("127.0.0.1:0");
    let addr = server.addr();
    let url = format!("ws://{addr}/ws");
    let sub = ChildProcess::spawn(wirehub().args(["sub", &url, "jobs"]));
    sub.wait_stderr("connected (session");
    for _ in 0..2 {
        let published = publish_with(
            &url,
            "jobs",
            "\"nightly\"",
            &["--idempotency-key", "job-2026-11-26"],
        );
        assert!(published.status.success(), "{}", text(&published.stderr));
        assert_eq!(
            text(&published.stdout).trim(),
            "1",
            "the same offset both times"
        );
    }
    let other = publish(&url, "jobs", "\"next\"");
    assert_eq!(text(&other.stdout).trim(), "2");
    assert_eq!(sub.next_stdout("the first message"), r#""nightly""#);
    assert_eq!(
        sub.next_stdout("the next message"),
        r#""next""#,
        "published once"
    );

    let bad = publish_with(&url, "jobs", "1", &["--idempotency-key", "has space"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("idempotency key"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn issue_14_sub_waits_the_servers_retry_after_instead_of_its_backoff() {
    let server = serve_with(
        "127.0.0.1:0",
        &[
            "--max-connections-per-ip",
            "1",
            "--overload-retry-after",
            "1s",
        ],
    );
    let url = server.ws_url();
    let mut holder = ChildProcess::spawn(wirehub().args(["sub", &url, "chat"]));
    holder.wait_stderr("connected (session");
    let sub = ChildProcess::spawn(wirehub().args([
        "sub",
        &url,
        "chat",
        "--backoff-initial",
        "20ms",
        "--backoff-max",
        "20ms",
    ]));
    sub.wait_stderr("the server is overloaded (HTTP 429)");
    let refused = std::time::Instant::now();
    // retry_after 1 s: Retry-After is 1 or 2 (a random point of [1 s, 2 s), rounded up).
    let line = sub.wait_stderr("reconnecting in");
    assert!(
        line.contains("(the server's Retry-After: 1s)")
            || line.contains("(the server's Retry-After: 2s)"),
        "{line}"
    );
    holder.kill();
    sub.wait_stderr("connected (session");
    assert!(
        refused.elapsed() >= std::time::Duration::from_millis(950),
        "reconnected {:?} after the refusal, not after Retry-After",
        refused.elapsed()
    );
    let attempts = sub
        .stderr_lines()
        .iter()
        .filter(|line| line.contains("overloaded"))
        .count();
    assert!(attempts <= 2, "{:?}", sub.stderr_lines());
}
