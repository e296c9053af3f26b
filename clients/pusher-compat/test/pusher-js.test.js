// pusher-js (the official client, its Node build) against the release binary: connection,
// public, private, presence and cache channels, client events, socket_id exclusion and user
// sign-in, with the app's auth endpoints written with the `pusher` server SDK.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Balancer, Collector, connect, disconnect, next, Server, startApp, subscribe, waitUntil, withTimeout } from "./helpers.js";

describe("pusher-js in Node", () => {
  /** @type {Server} */
  let server;
  let app;
  const clients = [];

  /** A connected client, disconnected after the tests. */
  async function client(extra = {}) {
    const c = await connect(server, {
      channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax" },
      userAuthentication: { endpoint: `${app.url}/pusher/user-auth`, transport: "ajax" },
      ...extra,
    });
    clients.push(c);
    return c;
  }

  /** A client whose channel authorization sends `params` (user_id, user_name, bad). */
  function clientWith(params) {
    return client({
      channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax", params },
      userAuthentication: { endpoint: `${app.url}/pusher/user-auth`, transport: "ajax", params },
    });
  }

  /** The channel's subscription_count, from the HTTP API. */
  async function subscriptionCount(name) {
    const response = await server.sdk().get({ path: `/channels/${name}`, params: { info: "subscription_count" } });
    return (await response.json()).subscription_count;
  }

  before(async () => {
    server = await Server.start();
    app = await startApp(server);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await app.close();
    await server.stop();
  });

  test("connects: connection_established gives a socket id NODE.N", async () => {
    const c = await client();
    assert.equal(c.connection.state, "connected");
    assert.match(c.connection.socket_id, /^\d+\.\d+$/);
    const other = await client();
    assert.notEqual(other.connection.socket_id, c.connection.socket_id);
  });

  test("a public channel receives an event triggered with the pusher server SDK", async () => {
    const c = await client();
    const { channel } = await subscribe(c, "orders");
    const received = next(channel, "order-shipped", "order-shipped");
    const response = await server.sdk().trigger("orders", "order-shipped", { id: 7, items: ["a", "b"] });
    assert.equal(response.status, 200);
    assert.deepEqual(await received, { id: 7, items: ["a", "b"] });
  });

  test("a v1 publish reaches pusher-js: {event, data} as that event, anything else as `message`", async () => {
    const c = await client();
    const { channel } = await subscribe(c, "prices");
    const named = next(channel, "price-changed", "price-changed");
    await server.publishV1("prices", { event: "price-changed", data: { sku: "x", price: 3 } });
    assert.deepEqual(await named, { sku: "x", price: 3 });
    const plain = next(channel, "message", "message");
    await server.publishV1("prices", { price: 4 });
    assert.deepEqual(await plain, { price: 4 });
  });

  test("a private channel is authorized by an endpoint using the SDK's authorizeChannel", async () => {
    const c = await client();
    const { channel } = await subscribe(c, "private-orders.1");
    const auth = app.requests.find((r) => r.url === "/pusher/auth" && r.body.includes("private-orders.1"));
    assert.ok(auth, "pusher-js called the auth endpoint");
    assert.match(auth.body, new RegExp(`socket_id=${c.connection.socket_id.replace(".", "\\.")}`));
    const received = next(channel, "paid", "paid");
    await server.sdk().trigger("private-orders.1", "paid", { total: 12.5 });
    assert.deepEqual(await received, { total: 12.5 });
  });

  test("a private channel with a wrong signature gets pusher:subscription_error", async () => {
    const c = await clientWith({ bad: "1" });
    const channel = c.subscribe("private-secret");
    const error = await next(channel, "pusher:subscription_error", "subscription_error");
    assert.equal(error.type, "AuthError");
    assert.equal(error.status, 401);
    assert.equal(channel.subscribed, false);
    // The connection stays usable.
    const { channel: ok } = await subscribe(c, "still-fine");
    assert.equal(ok.subscribed, true);
  });

  test("presence: two clients see each other; member_added, member_removed on disconnect", async () => {
    const alice = await clientWith({ user_id: "alice", user_name: "Alice" });
    const { channel: aliceRoom, data: first } = await subscribe(alice, "presence-room");
    assert.equal(first.count, 1);
    assert.equal(first.me.id, "alice");
    assert.deepEqual(first.me.info, { name: "Alice" });

    const added = next(aliceRoom, "pusher:member_added", "member_added");
    const bob = await clientWith({ user_id: "bob", user_name: "Bob" });
    const { data: second } = await subscribe(bob, "presence-room");
    assert.equal(second.count, 2);
    const seen = [];
    second.each((member) => seen.push([member.id, member.info]));
    seen.sort();
    assert.deepEqual(seen, [
      ["alice", { name: "Alice" }],
      ["bob", { name: "Bob" }],
    ]);
    const member = await added;
    assert.equal(member.id, "bob");
    assert.deepEqual(member.info, { name: "Bob" });
    assert.equal(aliceRoom.members.count, 2);

    const removed = next(aliceRoom, "pusher:member_removed", "member_removed");
    await disconnect(bob);
    assert.equal((await removed).id, "bob");
    assert.equal(aliceRoom.members.count, 1);
  });

  test("presence: a user's second connection is not announced again", async () => {
    const watcher = await clientWith({ user_id: "watcher" });
    const { channel } = await subscribe(watcher, "presence-tabs");
    const added = new Collector();
    const removed = new Collector();
    channel.bind("pusher:member_added", added.push);
    channel.bind("pusher:member_removed", removed.push);
    const tab1 = await clientWith({ user_id: "carol" });
    await subscribe(tab1, "presence-tabs");
    await added.waitFor(1, "member_added for carol");
    const tab2 = await clientWith({ user_id: "carol" });
    const { data } = await subscribe(tab2, "presence-tabs");
    assert.equal(data.count, 2);
    await disconnect(tab1);
    // Once the server has let tab1 go (2 subscriptions left), a marker sent after that
    // arrives after any member_removed tab1's leaving caused: there must be none.
    await waitUntil(async () => (await subscriptionCount("presence-tabs")) === 2, "tab1's subscription to end");
    const marker = next(channel, "marker", "the marker");
    await server.sdk().trigger("presence-tabs", "marker", {});
    await marker;
    assert.deepEqual(removed.items, []);
    await disconnect(tab2);
    await removed.waitFor(1, "member_removed for carol");
    assert.deepEqual(
      added.items.map((m) => m.id),
      ["carol"],
    );
    assert.deepEqual(
      removed.items.map((m) => m.id),
      ["carol"],
    );
  });

  test("client events on a private channel reach the others, not the sender", async () => {
    const sender = await client();
    const receiver = await client();
    const { channel: senderChannel } = await subscribe(sender, "private-chat");
    const { channel: receiverChannel } = await subscribe(receiver, "private-chat");
    const echoed = new Collector();
    senderChannel.bind("client-typing", echoed.push);
    const got = next(receiverChannel, "client-typing", "client-typing at the receiver");
    assert.equal(senderChannel.trigger("client-typing", { who: "sender" }), true);
    assert.deepEqual(await got, { who: "sender" });
    // Events of one channel arrive in order: once the sender has a later event, an echo of
    // its client event would have come before it.
    const marker = next(senderChannel, "marker", "the marker at the sender");
    await server.sdk().trigger("private-chat", "marker", {});
    await marker;
    assert.deepEqual(echoed.items, []);
  });

  test("client events on a public channel are refused", async () => {
    const c = await client();
    await subscribe(c, "public-chat");
    const error = new Promise((resolve) => {
      c.connection.bind("error", resolve);
    });
    c.send_event("client-typing", {}, "public-chat");
    const event = await withTimeout(error, 5_000, "pusher:error");
    assert.equal(event.type, "PusherError");
    assert.match(event.data.message, /only supported on private and presence channels/);
  });

  test("a cache- channel replays its last event on subscribe, and cache_miss otherwise", async () => {
    const sdk = server.sdk();
    const empty = await client();
    const miss = empty.subscribe("cache-empty");
    await next(miss, "pusher:cache_miss", "cache_miss");

    await sdk.trigger("cache-scores", "score", { n: 1 });
    await sdk.trigger("cache-scores", "score", { n: 2 });
    const late = await client();
    const channel = late.subscribe("cache-scores");
    const misses = new Collector();
    channel.bind("pusher:cache_miss", misses.push);
    const replayed = next(channel, "score", "the replayed score");
    assert.deepEqual(await replayed, { n: 2 });
    const live = next(channel, "score", "the live score");
    await sdk.trigger("cache-scores", "score", { n: 3 });
    assert.deepEqual(await live, { n: 3 });
    assert.equal(misses.items.length, 0);
  });

  test("trigger with socket_id skips that connection only", async () => {
    const excluded = await client();
    const other = await client();
    const { channel: excludedChannel } = await subscribe(excluded, "scores");
    const { channel: otherChannel } = await subscribe(other, "scores");
    const seenByExcluded = new Collector();
    excludedChannel.bind("goal", seenByExcluded.push);
    const seenByOther = next(otherChannel, "goal", "goal at the other client");
    const marker = next(excludedChannel, "marker", "marker at the excluded client");
    const sdk = server.sdk();
    await sdk.trigger("scores", "goal", { team: "a" }, { socket_id: excluded.connection.socket_id });
    await sdk.trigger("scores", "marker", {});
    assert.deepEqual(await seenByOther, { team: "a" });
    await marker;
    assert.deepEqual(seenByExcluded.items, []);
  });

  test("user sign-in: signin() with the SDK's authenticateUser, then sendToUser reaches the user", async () => {
    const c = await clientWith({ user_id: "dave" });
    const userChannelReady = new Promise((resolve) => {
      c.connection.bind("message", (event) => {
        if (event.event === "pusher_internal:subscription_succeeded" && event.channel === "#server-to-user-dave") resolve();
      });
    });
    c.signin();
    await withTimeout(c.user.signinDonePromise, 5_000, "signin_success");
    assert.equal(c.user.user_data.id, "dave");
    await withTimeout(userChannelReady, 5_000, "the #server-to-user-dave subscription");
    const received = next(c.user, "notice", "the user's event");
    const response = await server.sdk().sendToUser("dave", "notice", { text: "hello" });
    assert.equal(response.status, 200);
    assert.deepEqual(await received, { text: "hello" });
  });

  test("terminateUserConnections closes the user's connections with 4009 and pusher-js stays away", async () => {
    const c = await clientWith({ user_id: "erin" });
    c.signin();
    await withTimeout(c.user.signinDonePromise, 5_000, "signin_success");
    const other = await clientWith({ user_id: "frank" });
    other.signin();
    await withTimeout(other.user.signinDonePromise, 5_000, "frank's signin_success");
    const errors = new Collector();
    c.connection.bind("error", errors.push);
    const closed = next(c.connection, "disconnected", "erin's connection to be closed");
    const response = await server.sdk().terminateUserConnections("erin");
    assert.equal(response.status, 200);
    await closed;
    assert.ok(
      errors.items.some((e) => e.error?.data?.code === 4009 || e.data?.code === 4009),
      JSON.stringify(errors.items),
    );
    // 4009 means "do not reconnect": pusher-js stays disconnected; frank is untouched.
    // (pusher-js then closes its already closed Node socket once more, which leaves a 30 s
    // close timer of its WebSocket library behind: `npm test` runs with --test-force-exit.)
    assert.equal(c.connection.state, "disconnected");
    assert.equal(other.connection.state, "connected");
  });

  test("client events beyond the rate limit get pusher:error 4301", async () => {
    const sender = await client();
    const receiver = await client();
    const { channel } = await subscribe(sender, "private-flood");
    const { channel: atReceiver } = await subscribe(receiver, "private-flood");
    const received = new Collector();
    atReceiver.bind("client-flood", received.push);
    const limited = new Promise((resolve) => {
      sender.connection.bind("error", (error) => {
        if (error.data?.code === 4301) resolve(error);
      });
    });
    for (let i = 0; i < 15; i++) channel.trigger("client-flood", { i });
    const error = await withTimeout(limited, 5_000, "pusher:error 4301");
    assert.match(error.data.message, /rate limit/);
    // The allowed ones (a burst of 10 by default) arrive, in order.
    const got = await received.waitFor(10, "the allowed client events");
    assert.deepEqual(
      got.slice(0, 10).map((d) => d.i),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.equal(sender.connection.state, "connected");
  });

  test("a user channel cannot be subscribed to without signing in as that user", async () => {
    // pusher-js refuses to create `#` channels itself; its raw send_event reaches the server.
    const c = await client();
    const refused = new Promise((resolve) => {
      c.connection.bind("message", (event) => {
        if (event.event === "pusher:subscription_error" && event.channel === "#server-to-user-dave") resolve(event.data);
      });
    });
    c.send_event("pusher:subscribe", { channel: "#server-to-user-dave" });
    const error = await withTimeout(refused, 5_000, "subscription_error");
    assert.equal(error.type, "AuthError");
  });

  test("presence with numeric user ids, as Laravel sends them", async () => {
    const one = await clientWith({ user_id: "1", numeric: "1", user_name: "One" });
    const { channel } = await subscribe(one, "presence-App.Models.Team.1");
    const added = next(channel, "pusher:member_added", "member_added");
    const two = await clientWith({ user_id: "2", numeric: "1", user_name: "Two" });
    const { data } = await subscribe(two, "presence-App.Models.Team.1");
    assert.equal(data.count, 2);
    assert.deepEqual(data.get("1")?.info, { name: "One" });
    assert.equal((await added).id, "2");
  });

  test("pusher-js sends pusher:ping after its activity timeout and gets pusher:pong", async () => {
    const c = await client({ activityTimeout: 200, pongTimeout: 1_000 });
    const socketId = c.connection.socket_id;
    const changes = new Collector();
    c.connection.bind("state_change", changes.push);
    // The ConnectionManager's current transport connection emits `pong` on pusher:pong.
    const pongs = new Collector();
    c.connection.connection.bind("pong", pongs.push);
    await pongs.waitFor(2, "two pongs");
    assert.equal(c.connection.socket_id, socketId);
    assert.deepEqual(changes.items, []);
  });

  test("v1 sees a Pusher event as {event, data}: the server SDK's data is its JSON string", async () => {
    await server.sdk().trigger("v1-view", "order-shipped", { id: 3 });
    const response = await fetch(`${server.httpUrl}/api/history?channel=v1-view`);
    assert.equal(response.status, 200);
    const history = await response.json();
    assert.deepEqual(
      history.messages.map((m) => m.data),
      [{ event: "order-shipped", data: JSON.stringify({ id: 3 }) }],
    );
  });
});

describe("pusher-js and a node shutting down", () => {
  test("SIGTERM closes with 4200 and pusher-js reconnects at once, to the next node, resubscribed", async () => {
    // Two nodes behind a balancer: the draining node's 4200 sends pusher-js straight back
    // through the balancer, which now sends new connections to the other node.
    const first = await Server.start();
    const second = await Server.start();
    const balancer = await Balancer.start(first.port);
    const c = await connect(first, { wsPort: balancer.port });
    try {
      const { channel } = await subscribe(c, "survives");
      const firstSocket = c.connection.socket_id;
      const errors = new Collector();
      c.connection.bind("error", errors.push);
      const resubscribed = next(channel, "pusher:subscription_succeeded", "the resubscription");
      balancer.retarget(second.port);
      await first.stop("SIGTERM");
      await resubscribed;
      assert.equal(errors.items[0]?.data?.code, 4200, JSON.stringify(errors.items));
      assert.equal(c.connection.state, "connected");
      assert.notEqual(c.connection.socket_id, firstSocket);
      const received = next(channel, "after", "the event from the second node");
      await second.sdk().trigger("survives", "after", { ok: true });
      assert.deepEqual(await received, { ok: true });
    } finally {
      c.disconnect();
      await balancer.close();
      await first.stop();
      await second.stop();
    }
  });
});
