//! The subscribers: the Rust SDK in this process, `wirehub sub` processes and the
//! TypeScript SDK under Node. Each records what its application sees, in order, into the
//! [`Recorder`]; each can be stalled (its application stops reading while the client keeps
//! receiving) and the processes can be frozen (SIGSTOP: they stop reading their socket).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wirehub_client::{Backoff, Client, ClientConfig, Event, SubscriptionEvent};

use crate::cluster::signal;
use crate::record::{ClientKind, Payload, Recorder};

/// What the harness knows about one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberSpec {
    /// Its index in the record.
    pub(crate) index: usize,
    /// E.g. `rust-0`.
    pub(crate) name: String,
    /// Which client.
    pub(crate) kind: ClientKind,
    /// The node it connects to (its name), and whether through a cuttable proxy.
    pub(crate) node: String,
    /// The proxy's index, when it goes through one.
    pub(crate) proxy: Option<usize>,
    /// The WebSocket URL it uses (the proxy's or the node's).
    pub(crate) url: String,
    /// The channels it subscribes to.
    pub(crate) channels: Vec<String>,
    /// For the TypeScript SDK: `iterator` or `callback`.
    pub(crate) mode: &'static str,
}

/// A running subscriber.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// What it is.
    pub(crate) spec: SubscriberSpec,
    /// Until when its application does not read (the reading loop checks it).
    stall: watch::Sender<Instant>,
    /// The child process (`wirehub sub`, node), if any.
    child: Option<Child>,
    /// The Node subscriber's stdin, where stall commands go.
    stdin: Option<ChildStdin>,
    /// The Rust SDK client, closed at the end.
    client: Option<Client>,
    tasks: Vec<JoinHandle<()>>,
}

/// The Rust SDK's settings in the run: short backoff and dead-server detection, as a test
/// of reconnects needs (the server's heartbeat is short too).
fn client_config(url: &str) -> ClientConfig {
    ClientConfig::new(url)
        .backoff(
            Backoff::default()
                .initial(Duration::from_millis(100))
                .max(Duration::from_secs(1)),
        )
        .healthy_after(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(3))
        .pong_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(600))
}

impl Subscriber {
    /// Starts a subscriber as its spec says.
    pub(crate) fn start(
        spec: SubscriberSpec,
        recorder: Arc<Recorder>,
        bin: &Path,
        node_script: &Path,
        sdk: &Path,
    ) -> Subscriber {
        let (stall, stalled) = watch::channel(Instant::now());
        let mut subscriber = Subscriber {
            spec: spec.clone(),
            stall,
            child: None,
            stdin: None,
            client: None,
            tasks: Vec::new(),
        };
        match spec.kind {
            ClientKind::RustSdk => subscriber.start_rust(recorder, stalled),
            ClientKind::Sub => {
                let mut command = Command::new("sh");
                // stdout and stderr in one pipe, so that a gap line keeps its place among the
                // deliveries.
                command
                    .arg("-c")
                    .arg("exec \"$0\" \"$@\" 2>&1")
                    .arg(bin)
                    .arg("sub")
                    .arg(&spec.url)
                    .args(&spec.channels)
                    .args(["--backoff-initial", "100ms", "--backoff-max", "1s"])
                    .args([
                        "--idle-timeout",
                        "3s",
                        "--pong-timeout",
                        "2s",
                        "--connect-timeout",
                        "3s",
                    ]);
                subscriber.start_process(command, recorder, stalled, parse_sub_line);
            }
            ClientKind::TypeScript => {
                let mut command = Command::new("node");
                command
                    .arg(node_script)
                    .arg(sdk)
                    .arg(&spec.url)
                    .arg(spec.mode)
                    .args(&spec.channels);
                subscriber.start_process(command, recorder, stalled, parse_node_line);
            }
        }
        subscriber
    }

    fn start_rust(&mut self, recorder: Arc<Recorder>, mut stalled: watch::Receiver<Instant>) {
        let index = self.spec.index;
        let client = match Client::connect(client_config(&self.spec.url)) {
            Ok(client) => client,
            Err(error) => {
                recorder.problem(index, format!("cannot start the client: {error}"));
                return;
            }
        };
        let mut events = client.events();
        let events_recorder = recorder.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Disconnected { code, .. } = event {
                    events_recorder.closed(index, code);
                }
            }
        }));
        let channels = self.spec.channels.clone();
        let task_client = client.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            for channel in &channels {
                match task_client.subscribe(channel.as_str()).await {
                    Ok(subscription) => {
                        let channel = channel.clone();
                        streams.push(
                            subscription
                                .map(move |event| (channel.clone(), event))
                                .boxed(),
                        );
                    }
                    Err(error) => {
                        recorder.problem(index, format!("cannot subscribe to {channel}: {error}"));
                        return;
                    }
                }
            }
            let mut all = futures_util::stream::select_all(streams);
            loop {
                wait_stall(&mut stalled).await;
                let Some((channel, event)) = all.next().await else {
                    recorder.problem(index, "every subscription ended".into());
                    return;
                };
                match event {
                    SubscriptionEvent::Message(message) => {
                        let id = Payload::parse(message.json()).map(|payload| payload.id());
                        recorder.deliver(index, &channel, Some(message.offset), id);
                    }
                    SubscriptionEvent::Ended(error) => {
                        recorder
                            .problem(index, format!("subscription to {channel} ended: {error}"));
                    }
                    // RecoveryFailed, Lagged, and whatever explicit loss report a newer SDK
                    // adds: every event of a subscription that is not a message reports
                    // something the application did not get.
                    other => recorder.gap(index, &channel, format!("{other:?}")),
                }
            }
        }));
        self.client = Some(client);
    }

    fn start_process(
        &mut self,
        mut command: Command,
        recorder: Arc<Recorder>,
        mut stalled: watch::Receiver<Instant>,
        parse: fn(&str, &SubscriberSpec, &Recorder),
    ) {
        let index = self.spec.index;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                recorder.problem(index, format!("cannot start: {error}"));
                return;
            }
        };
        self.stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            recorder.problem(index, "no stdout".into());
            return;
        };
        let spec = self.spec.clone();
        let stall_in_process = spec.kind == ClientKind::TypeScript;
        self.tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                // `wirehub sub` is stalled by not reading its output (its writes then block,
                // as with a slow pipe reader); the Node subscriber stalls inside.
                if !stall_in_process {
                    wait_stall(&mut stalled).await;
                }
                match lines.next_line().await {
                    Ok(Some(line)) => parse(&line, &spec, &recorder),
                    Ok(None) | Err(_) => {
                        recorder.problem(index, "its output ended (the process exited)".into());
                        return;
                    }
                }
            }
        }));
        self.child = Some(child);
    }

    /// The application stops reading for `hold` (zero: it reads again now).
    pub(crate) async fn stall(&mut self, hold: Duration) {
        let _ = self.stall.send(Instant::now() + hold);
        if let Some(stdin) = &mut self.stdin {
            let command = format!("{{\"stall\":{}}}\n", hold.as_millis());
            let _ = stdin.write_all(command.as_bytes()).await;
        }
    }

    /// The process id of a subscriber process.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Freezes (`true`) or thaws the process.
    pub(crate) async fn freeze(&self, stop: bool) {
        if let Some(pid) = self.pid() {
            signal(pid, if stop { "STOP" } else { "CONT" }).await;
        }
    }

    /// Stops the subscriber: closes the client or kills the process.
    pub(crate) async fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), client.close()).await;
        }
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "CONT").await;
            }
            let _ = child.kill().await;
        }
    }
}

/// Waits while the application is stalled; a new stall time (a longer one, or an end
/// now) takes effect at once.
async fn wait_stall(stalled: &mut watch::Receiver<Instant>) {
    loop {
        let until = *stalled.borrow_and_update();
        if until <= Instant::now() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            changed = stalled.changed() => if changed.is_err() { return },
        }
    }
}

/// One line of `wirehub sub`'s merged stdout and stderr: a delivery's data as JSON, or a
/// line of its own. A stderr line may be split by a delivery written in the middle of it
/// (the two streams are written by different tasks), so JSON objects are looked for
/// anywhere in the line and the rest is read as text.
fn parse_sub_line(line: &str, spec: &SubscriberSpec, recorder: &Recorder) {
    let mut text = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{\"") {
        text.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let mut values =
            serde_json::Deserializer::from_str(candidate).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                match Payload::from_value(&value) {
                    Some(payload) => {
                        recorder.deliver(spec.index, &payload.ch.clone(), None, Some(payload.id()))
                    }
                    None => recorder.problem(
                        spec.index,
                        format!("data that is not an audit payload: {value}"),
                    ),
                }
                rest = &candidate[used..];
            }
            _ => {
                text.push_str(candidate);
                rest = "";
            }
        }
    }
    text.push_str(rest);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if let Some(code) = text
        .strip_prefix("wirehub sub: disconnected: ")
        .and_then(|rest| rest.split_whitespace().next())
    {
        recorder.closed(spec.index, code.parse().ok());
        return;
    }
    // Why the command ended (anyhow's "Error: ..." and "Caused by:" lines, a subscription
    // that ended, a stop).
    if text.starts_with("Error")
        || text.starts_with("Caused by")
        || text.starts_with("wirehub sub: stopped")
        || text.contains("ended")
    {
        recorder.problem(spec.index, format!("said: {text}"));
    }
    // "messages on \"C\" were lost ...", "output too slow: N messages dropped", and the gap
    // reports of newer versions: a loss, on the channel it names or else on all of them.
    let lower = text.to_ascii_lowercase();
    if ["lost", "dropped", "gap", "missed", "recovery failed"]
        .iter()
        .any(|word| lower.contains(word))
    {
        let named: Vec<&String> = spec
            .channels
            .iter()
            .filter(|channel| text.contains(&format!("\"{channel}\"")))
            .collect();
        let channels = if named.is_empty() {
            spec.channels.iter().collect()
        } else {
            named
        };
        for channel in channels {
            recorder.gap(spec.index, channel, text.to_owned());
        }
    }
}

/// One line of the Node subscriber (see `node/subscriber.mjs`).
fn parse_node_line(line: &str, spec: &SubscriberSpec, recorder: &Recorder) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        recorder.problem(spec.index, format!("unexpected output: {line}"));
        return;
    };
    let channel = value["ch"].as_str().unwrap_or_default();
    match value["k"].as_str() {
        Some("msg") => {
            let id = Payload::from_value(&value["data"]).map(|payload| payload.id());
            recorder.deliver(spec.index, channel, value["off"].as_u64(), id);
        }
        Some("gap") => recorder.gap(
            spec.index,
            channel,
            value["what"].as_str().unwrap_or("gap").to_owned(),
        ),
        Some("closed") => recorder.closed(
            spec.index,
            value["code"]
                .as_u64()
                .and_then(|code| u16::try_from(code).ok()),
        ),
        Some("ready") => {}
        _ => recorder.problem(spec.index, line.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::Item;

    fn spec() -> SubscriberSpec {
        SubscriberSpec {
            index: 0,
            name: "sub-0".into(),
            kind: ClientKind::Sub,
            node: "memory".into(),
            proxy: None,
            url: String::new(),
            channels: vec!["disc:m".into(), "gap:m".into()],
            mode: "",
        }
    }

    #[test]
    fn sub_lines_are_deliveries_gaps_and_closes_even_when_interleaved() {
        let recorder = Recorder::new();
        let spec = spec();
        parse_sub_line(
            r#"{"p":"h0","seq":1,"ch":"disc:m","pad":"x"}"#,
            &spec,
            &recorder,
        );
        parse_sub_line(
            r#"wirehub sub: messages on {"p":"h0","seq":2,"ch":"disc:m"}"gap:m" were lost while disconnected"#,
            &spec,
            &recorder,
        );
        parse_sub_line(
            "wirehub sub: output too slow: 12 messages dropped",
            &spec,
            &recorder,
        );
        parse_sub_line(
            "wirehub sub: disconnected: 4100 slow consumer",
            &spec,
            &recorder,
        );
        parse_sub_line("wirehub sub: connected (session abc)", &spec, &recorder);
        let snapshot = recorder.snapshot();
        let disc = &snapshot.streams[&(0, "disc:m".to_owned())].items;
        let gap = &snapshot.streams[&(0, "gap:m".to_owned())].items;
        assert_eq!(disc.len(), 3, "{disc:?}");
        assert!(matches!(disc[1], Item::Delivery { offset: None, .. }));
        assert!(matches!(disc[2], Item::Gap(_)));
        assert_eq!(gap.len(), 2, "named once, then the unnamed drop: {gap:?}");
        assert_eq!(snapshot.closes[&0]["4100"], 1);
        assert!(snapshot.problems.is_empty());
    }
}
