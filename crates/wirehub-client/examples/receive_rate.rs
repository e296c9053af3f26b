//! How much CPU the Rust SDK spends per received message: one subscriber, alone on a thread
//! of its own (a current-thread runtime), receives `COUNT` messages of `SIZE` bytes that
//! publishers on other threads send through a running server; prints the subscriber thread's
//! CPU time per message (from /proc/thread-self/stat, Linux) and the rate.
//!
//! ```text
//! wirehub serve --listen 127.0.0.1:8080 --publish-rate 0 &
//! cargo run --release -p wirehub-client --example receive_rate -- ws://127.0.0.1:8080/ws 200000 100 on
//! ```
//! Arguments: URL, COUNT (default 200 000), SIZE in bytes of each message's text (100),
//! `on`/`off`: offer permessage-deflate (on).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use wirehub_client::{Client, ClientConfig, SubscriptionEvent};

/// This thread's user + system CPU time, in clock ticks (1/100 s on Linux).
fn thread_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    field(11) + field(12)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let count: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let compression = args.next().is_none_or(|a| a != "off");
    let text = "the quick brown fox jumps over the lazy dog "
        .repeat(size / 44 + 1)
        .get(..size)
        .unwrap_or_default()
        .to_owned();

    let ready = Arc::new(std::sync::Barrier::new(2));
    let subscriber = {
        let url = url.clone();
        let ready = ready.clone();
        std::thread::spawn(move || -> Result<(Duration, u64), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let config = ClientConfig::new(url)
                    .subscription_capacity(65_536)
                    .compression(compression);
                let client = Client::connect(config).map_err(|e| e.to_string())?;
                let mut feed = client.subscribe("rate").await.map_err(|e| e.to_string())?;
                ready.wait();
                let mut received = 0;
                let mut started = None;
                while received < count {
                    let item = tokio::time::timeout(Duration::from_secs(30), feed.recv())
                        .await
                        .map_err(|_| format!("nothing for 30 s after {received} messages"))?;
                    match item {
                        Some(SubscriptionEvent::Message(_)) => {
                            if started.is_none() {
                                started = Some((Instant::now(), thread_ticks()));
                            }
                            received += 1;
                        }
                        Some(_) => {}
                        None => return Err("the subscription ended".into()),
                    }
                }
                let (at, ticks) = started.unwrap_or((Instant::now(), thread_ticks()));
                Ok((at.elapsed(), thread_ticks() - ticks))
            })
        })
    };

    let runtime = tokio::runtime::Runtime::new()?;
    ready.wait();
    runtime.block_on(async {
        // The publisher does not compress: the figures are the subscriber's.
        let publisher = Client::connect(ClientConfig::new(url).compression(false))?;
        let data = serde_json::json!({ "text": text });
        // The first publish waits for the connection; the others keep 64 in flight (the
        // server must not limit the publish rate: --publish-rate 0).
        publisher.publish("rate", &data).await?;
        futures_util::stream::iter(1..count)
            .map(|_| publisher.publish("rate", &data))
            .buffer_unordered(64)
            .for_each(|result| async move {
                if let Err(error) = result {
                    eprintln!("publish: {error}");
                }
            })
            .await;
        Ok::<_, wirehub_client::Error>(())
    })?;
    let (elapsed, ticks) = subscriber.join().map_err(|_| "the subscriber panicked")??;
    let cpu = Duration::from_millis(ticks * 10);
    println!(
        "{count} messages of {size} bytes, deflate {}: {:.0} msg/s, subscriber CPU {:.2} s, {:.2} us per message",
        if compression { "offered" } else { "off" },
        count as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
}
