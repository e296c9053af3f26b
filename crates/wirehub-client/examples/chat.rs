//! A tiny chat on a running server: prints what others say on a channel and sends each line
//! you type. Stays connected across server restarts by itself.
//!
//! ```text
//! cargo run --release -- serve &
//! cargo run -p wirehub-client --example chat -- ws://127.0.0.1:8080/ws room:lobby
//! ```

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use wirehub_client::{Client, ClientConfig, Event, SubscriptionEvent};

#[tokio::main]
async fn main() -> Result<(), wirehub_client::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let channel = args.next().unwrap_or_else(|| "room:lobby".to_owned());

    let client = Client::connect(ClientConfig::new(url))?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Connected { session, .. } => eprintln!("* connected ({session})"),
                Event::Reconnecting { delay, .. } => eprintln!("* reconnecting in {delay:?}"),
                Event::Stopped { error } => eprintln!("* stopped: {error:?}"),
                _ => {}
            }
        }
    });

    let mut messages = client.subscribe(&channel).await?;
    tokio::spawn(async move {
        while let Some(item) = messages.next().await {
            match item {
                SubscriptionEvent::Message(message) => println!("{}", message.json()),
                SubscriptionEvent::RecoveryFailed { .. } => {
                    eprintln!("* some messages were lost while disconnected");
                }
                _ => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Err(err) = client.publish(&channel, &line).await {
            eprintln!("* not sent: {err}");
        }
    }
    client.close().await;
    Ok(())
}
