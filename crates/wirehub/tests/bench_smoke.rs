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

#[test]
fn issue_14_connect_storm_sets_up_every_client() {
    let server = ServerProcess::serve(BIN, &[]);
    let url = server.ws_url();
    let (output, report) = bench(&[
        "connect-storm",
        "--url",
        &url,
        "-n",
        "200",
        "-k",
        "4",
        "--hold",
        "0s",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["scenario"], "connect-storm");
    assert_eq!(report["connections"], 200);
    assert_eq!(report["connect_failures"], 0);
    assert_eq!(report["closed_by_server"], 0);
    assert_eq!(report["latency_us"]["count"], 200, "{report}");
}

#[test]
fn issue_14_connect_storm_against_the_connection_rate_retries_after_retry_after() {
    // 100 new connections a second, 50 at once: 150 clients need more than the burst, and
    // every refused one comes back after its Retry-After.
    let server = ServerProcess::serve(BIN, &["--connect-rate", "100", "--connect-burst", "50"]);
    let url = server.ws_url();
    let (output, report) = bench(&[
        "connect-storm",
        "--url",
        &url,
        "-n",
        "150",
        "-k",
        "3",
        "--hold",
        "0s",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["connections"], 150);
    assert_eq!(report["connect_failures"], 0);
    let refusals = report["refusals"].as_u64().expect("refusals");
    // The bench opens 64 handshakes at a time, so how many are refused depends on its
    // pace; that the storm met the limit, and every refusal was retried, is what counts.
    assert!(refusals >= 1, "the storm met the connection rate: {report}");
    assert!(
        report["refused_by_status"]["503"].as_u64() == Some(refusals),
        "{report}"
    );
    // The refused clients waited at least one Retry-After (a whole second).
    assert!(
        report["setup_s"].as_f64().expect("setup_s") >= 1.0,
        "{report}"
    );
    let seconds = report["arrivals_per_s"].as_array().expect("arrivals_per_s");
    assert!(seconds.len() >= 2, "arrivals spread over seconds: {report}");
}

/// A settings file that turns presence on for the bench's channels; removed on drop.
struct PresenceConfig(std::path::PathBuf);

impl PresenceConfig {
    fn new(name: &str) -> PresenceConfig {
        let path = std::env::temp_dir().join(format!(
            "wirehub-bench-presence-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "[[channels]]\npattern = \"bench-presence:*\"\npresence = true\n",
        )
        .expect("write the settings file");
        PresenceConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for PresenceConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn presence_counts_every_probe_join_once_per_member() {
    let config = PresenceConfig::new("memory");
    let server = ServerProcess::serve(BIN, &["--config", config.path()]);
    let url = server.ws_url();
    let (output, report) = bench(&[
        "presence",
        "--url",
        &url,
        "-n",
        "60",
        "--probe-at",
        "10",
        "--probe-joins",
        "10",
        "--reads",
        "5",
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["scenario"], "presence");
    assert_eq!(report["members"], 60);
    let probes = report["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 2, "{report}");
    // 10 joins into 10 members, one at a time: 11 + 12 + … + 20 join frames.
    assert_eq!(probes[0]["members_before"], 10);
    assert_eq!(probes[0]["deliveries"], 155);
    assert_eq!(probes[0]["deliveries_expected"], 155);
    assert_eq!(probes[1]["members_before"], 50);
    assert_eq!(probes[1]["deliveries"], 10 * 50 + 55);
    assert_eq!(probes[1]["join_us"]["count"], 10);
    let reads = report["reads"].as_array().expect("reads");
    assert_eq!(reads[1]["members"], 60);
    assert_eq!(reads[1]["listed"], 60);
    assert_eq!(reads[1]["latency_us"]["count"], 5);
    assert!(report["join_frames"].as_u64() >= report["join_frames_min"].as_u64());
    assert_eq!(report["leaves"], 0);
}

#[test]
fn presence_on_two_nodes_reports_the_redis_traffic_per_join() {
    let redis = wirehub_testkit::RedisServer::start();
    let config = PresenceConfig::new("redis");
    let broker = redis.url();
    let args = [
        "--config",
        config.path(),
        "--broker",
        broker.as_str(),
        "--presence-max-members",
        "20",
    ];
    let a = ServerProcess::serve(BIN, &args);
    let b = ServerProcess::serve(BIN, &args);
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let (output, report) = bench(&[
        "presence",
        "--url",
        &urls,
        "-n",
        "40",
        "--probe-at",
        "5",
        "--probe-joins",
        "5",
        "--reads",
        "3",
        "--redis",
        &broker,
    ]);
    assert_clean(&output, &report);
    assert_eq!(report["members"], 40);
    let probes = report["probes"].as_array().expect("probes");
    for probe in probes {
        // Members on both nodes, each join once to each of them.
        assert_eq!(probe["deliveries"], probe["deliveries_expected"], "{probe}");
        let redis = &probe["redis_per_join"];
        assert!(redis["in_bytes"].as_f64().unwrap_or(0.0) > 0.0, "{probe}");
        assert!(redis["out_bytes"].as_f64().unwrap_or(0.0) > 0.0, "{probe}");
        assert!(
            redis["calls"]["evalsha"].as_f64().unwrap_or(0.0) >= 1.0,
            "the join script at least: {probe}"
        );
    }
    let last = &report["reads"][1];
    assert_eq!(last["members"], 40);
    assert_eq!(last["listed"], 20, "--presence-max-members: {last}");
    assert_eq!(last["truncated"], true);
}
