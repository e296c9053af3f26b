//! The Rust SDK's presence against the real server: `Client::presence` lists the members
//! with their token's user and info, `Event::Join`/`Event::Leave` follow subscriptions, the
//! refusals are typed (`presence_disabled`, `forbidden`), and a client whose link breaks
//! comes back within the grace as the same member, with no leave and no join.

use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;
use wirehub_client::{Client, ClientConfig, Error, ErrorCode, Event, Member};
use wirehub_server::{AuthConfig, ChannelOptions, ChannelRules, ServerConfig};
use wirehub_testkit::{Claims, TcpProxy, TestServer, client_config, hs256_token, wait_for};

const SECRET: &str = "a-test-secret-that-is-long-enough";
const WAIT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_millis(300);

fn server_config() -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .auth(Some(AuthConfig::Secret(SECRET.to_owned())))
        .channels(ChannelRules::new(vec![
            ChannelOptions::new("room:*").presence(true),
            ChannelOptions::new("private:*").presence(true),
        ]))
        .presence_grace(GRACE)
}

fn client(url: &str, user: &str) -> Client {
    let claims = Claims::valid_for(user, Duration::from_secs(3600))
        .subscribe(["room:*"])
        .info(json!({"name": user.to_uppercase()}));
    let config: ClientConfig = client_config(url, WAIT).token(hs256_token(SECRET, &claims));
    Client::connect(config).expect("connect")
}

/// The next `Join` or `Leave` on `channel` for `user`.
async fn member_event(
    events: &mut wirehub_client::Events,
    kind: &str,
    channel: &str,
    user: &str,
) -> Member {
    let event = wait_for(events, &format!("{kind} of {user}"), |event| match event {
        Event::Join { channel: c, member } if kind == "join" => {
            c == channel && member.user.as_deref() == Some(user)
        }
        Event::Leave { channel: c, member } if kind == "leave" => {
            c == channel && member.user.as_deref() == Some(user)
        }
        _ => false,
    })
    .await;
    match event {
        Event::Join { member, .. } | Event::Leave { member, .. } => member,
        other => unreachable!("{other:?}"),
    }
}

fn users(members: &[Member]) -> Vec<String> {
    let mut users: Vec<String> = members
        .iter()
        .map(|m| m.user.clone().unwrap_or_default())
        .collect();
    users.sort();
    users
}

/// The events already queued, without waiting for more.
async fn queued(events: &mut wirehub_client::Events) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(event)) = timeout(Duration::from_millis(20), events.recv()).await {
        out.push(event);
    }
    out
}

#[tokio::test]
async fn presence_lists_members_and_join_and_leave_arrive_as_events() {
    let server = TestServer::start(server_config()).await;
    let ann = client(&server.ws_url(), "ann");
    let mut ann_events = ann.events();
    let _ann_room = ann.subscribe("room:1").await.expect("subscribe");
    let ann_member = member_event(&mut ann_events, "join", "room:1", "ann").await;
    assert_eq!(ann_member.info, Some(json!({"name": "ANN"})));

    // Bob goes through a proxy whose connection the test resets.
    let proxy = TcpProxy::start(server.addr()).await;
    let bob = client(&proxy.ws_url(), "bob");
    let mut bob_events = bob.events();
    let bob_room = bob.subscribe("room:1").await.expect("subscribe");
    let bob_member = member_event(&mut ann_events, "join", "room:1", "bob").await;
    assert_eq!(bob_member.info, Some(json!({"name": "BOB"})));
    assert_eq!(
        member_event(&mut bob_events, "join", "room:1", "bob").await,
        bob_member,
        "a client sees its own join"
    );

    for reader in [&ann, &bob] {
        let reply = reader.presence("room:1").await.expect("presence");
        assert_eq!((reply.channel.as_str(), reply.count), ("room:1", 2));
        assert_eq!(users(&reply.members), ["ann", "bob"]);
        assert!(!reply.truncated);
        assert!(reply.members.contains(&ann_member) && reply.members.contains(&bob_member));
    }
    // A channel nobody joined is empty; no subscription is needed to read it.
    let empty = ann.presence("room:2").await.expect("presence");
    assert_eq!((empty.count, empty.members.len()), (0, 0));

    // Refusals are typed, and the connection stays.
    let disabled = ann.presence("chat").await;
    assert!(
        matches!(
            &disabled,
            Err(Error::Server {
                code: ErrorCode::PresenceDisabled,
                ..
            })
        ),
        "{disabled:?}"
    );
    let forbidden = ann.presence("private:1").await;
    assert!(
        matches!(
            &forbidden,
            Err(Error::Server {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{forbidden:?}"
    );
    assert!(matches!(
        ann.presence("bad name").await,
        Err(Error::InvalidChannel(_))
    ));

    // Bob's link breaks; the SDK reconnects and resubscribes within the grace: he is the
    // same member, and nobody is told he left or joined.
    let _ = queued(&mut ann_events).await;
    proxy.reset();
    wait_for(&mut bob_events, "the disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    wait_for(&mut bob_events, "the reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let reply = bob.presence("room:1").await.expect("presence");
    assert_eq!(reply.count, 2, "{reply:?}");
    assert!(reply.members.contains(&bob_member), "{reply:?}");
    // Waiting for something not to happen: a bounded wait past the grace.
    tokio::time::sleep(GRACE * 3).await;
    let reply = ann.presence("room:1").await.expect("presence");
    assert_eq!(reply.count, 2, "{reply:?}");
    assert!(reply.members.contains(&bob_member), "{reply:?}");
    let seen = queued(&mut ann_events).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Join { .. } | Event::Leave { .. })),
        "no leave or join for a reconnect within the grace: {seen:?}"
    );

    // Leaving for good: an unsubscribe is a leave at once, naming the member as listed.
    bob_room.unsubscribe().await.expect("unsubscribe");
    assert_eq!(
        member_event(&mut ann_events, "leave", "room:1", "bob").await,
        bob_member
    );
    let reply = ann.presence("room:1").await.expect("presence");
    assert_eq!(users(&reply.members), ["ann"]);
    // And a client that closes leaves at once as well.
    let _again = bob.subscribe("room:1").await.expect("subscribe");
    let bob_again = member_event(&mut ann_events, "join", "room:1", "bob").await;
    bob.close().await;
    assert_eq!(
        member_event(&mut ann_events, "leave", "room:1", "bob").await,
        bob_again
    );
    assert_eq!(ann.presence("room:1").await.expect("presence").count, 1);
}
