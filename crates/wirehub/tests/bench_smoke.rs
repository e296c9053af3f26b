//! `wirehub bench` end to end: the built binary load-tests a `wirehub serve` child (on a port
//! the server chose) with tiny counts, prints exactly one JSON line on stdout, and reports
//! every delivery exactly once and in order.

use std::process::{Command, Output};

use serde_json::Value;
use wirehub_testkit::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

/// Runs `wirehub bench ARGS --quiet` and returns its output and its one JSON line.
fn bench(args: &[&str]) -> (Output, Value) {
    let output = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--quiet", "--max-time", "60s"])
        .output()
        .expect("run wirehub bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON line on stdout\nstdout: {stdout}\nstderr: {stderr}"
    );
    let report = serde_json::from_str(lines[0]).expect("the line is JSON");
    (output, report)
}

#[track_caller]
fn assert_clean(output: &Output, report: &Value) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {report}\n{stderr}");
    assert_eq!(report["ok"], true, "{report}");
    for key in ["missing", "duplicated", "out_of_order", "seq_mismatch"] {
        if !report[key].is_null() {
            assert_eq!(report[key], 0, "{key}: {report}");
        }
    }
}

#[test]
fn fanout_delivers_every_message_once_and_in_order() {
    let server = ServerProcess::serve(BIN, &["--publish-rate", "0"]);
    let url = server.ws_url();
    let (output, report) = bench(&["fanout", "--url", &url, "-n", "20", "-m", "300"]);
    assert_clean(&output, &report);
    assert_eq!(report["scenario"], "fanout");
    assert_eq!(report["subscribers"], 20);
    assert_eq!(report["messages"], 300);
    assert_eq!(report["deliveries"], 20 * 300);
    assert_eq!(report["latency_us"]["count"], 20 * 300);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("delivery check: 0 missing"), "{stderr}");
}

#[test]
fn fanout_at_a_fixed_rate_and_rooms() {
    let server = ServerProcess::serve(BIN, &["--publish-rate", "0"]);
    let url = server.ws_url();
    let (output, report) = bench(&[
        "fanout", "--url", &url, "-n", "5", "-m", "20", "--rate", "200",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["deliveries"], 5 * 20);
    let (output, report) = bench(&[
        "rooms",
        "--url",
        &url,
        "--rooms",
        "4",
        "--members",
        "3",
        "--publishers",
        "2",
        "--rate-per-room",
        "20",
        "--duration",
        "500ms",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["channels"], 4);
    assert!(report["deliveries"].as_u64().unwrap_or(0) > 0, "{report}");
}

#[test]
fn conns_ping_and_churn() {
    let server = ServerProcess::serve(BIN, &[]);
    let url = server.ws_url();
    let (output, report) = bench(&[
        "conns", "--url", &url, "-n", "50", "--settle", "0s", "--hold", "0s",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["connections"], 50);
    assert_eq!(report["connect_failures"], 0);
    let (output, report) = bench(&[
        "ping",
        "--url",
        &url,
        "-n",
        "10",
        "-m",
        "30",
        "--interval",
        "0s",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["pings"], 30);
    let (output, report) = bench(&["churn", "--url", &url, "-m", "40", "-w", "4"]);
    assert_clean(&output, &report);
    assert_eq!(report["cycles"], 40);
}

#[test]
fn refuses_targets_off_this_machine() {
    // 192.0.2.0/24 is reserved for documentation: nothing is sent, the URL is refused first.
    let output = Command::new(BIN)
        .args(["bench", "fanout", "--url", "ws://192.0.2.1:9/ws", "--quiet"])
        .output()
        .expect("run wirehub bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(output.stdout.is_empty(), "no JSON line for a refused run");
}

#[test]
fn issue_15_fanout_spreads_its_subscribers_over_several_nodes() {
    let redis = wirehub_testkit::RedisServer::start();
    let broker = redis.url();
    let args = ["--publish-rate", "0", "--broker", broker.as_str()];
    let a = ServerProcess::serve(BIN, &args);
    let b = ServerProcess::serve(BIN, &args);
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let (output, report) = bench(&["fanout", "--url", &urls, "-n", "10", "-m", "50"]);
    assert_clean(&output, &report);
    // Half the subscribers are on the node without the publisher: they get every message
    // through Redis.
    assert_eq!(report["deliveries"], 10 * 50);
}
