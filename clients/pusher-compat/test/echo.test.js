// Laravel Echo (broadcaster `pusher`, on the real pusher-js) against the release binary, set
// up as the README's Laravel walkthrough says: Echo.channel().listen(), Echo.private() with
// the /broadcasting/auth endpoint, Echo.join() here/joining/leaving, whispers, and
// `broadcast(...)->toOthers()` (the X-Socket-ID header, sent on as the SDK's socket_id).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import EchoModule from "laravel-echo";

import { Collector, Pusher, Server, startApp, withTimeout } from "./helpers.js";

// The package's CommonJS build exports `{ default: Echo, ... }`.
const Echo = EchoModule.default ?? EchoModule;

describe("Laravel Echo on pusher-js", () => {
  /** @type {Server} */
  let server;
  let app;
  const echoes = [];

  /** An Echo connected to the server; `params` go to the auth endpoint (the app's user). */
  async function echo(params = {}) {
    const instance = new Echo({
      broadcaster: "pusher",
      Pusher,
      key: "app-key",
      ...server.clientOptions(),
      authEndpoint: `${app.url}/broadcasting/auth`,
      auth: { headers: {}, params },
      csrfToken: "csrf-of-the-page",
      withoutInterceptors: true,
    });
    echoes.push(instance);
    const pusher = instance.connector.pusher;
    if (pusher.connection.state !== "connected") {
      await withTimeout(
        new Promise((resolve) => pusher.connection.bind("connected", resolve)),
        5_000,
        "Echo's pusher-js to connect",
      );
    }
    return instance;
  }

  /** Resolves when Echo's channel is subscribed. */
  function subscribed(channel, name) {
    return withTimeout(
      new Promise((resolve, reject) => {
        channel.subscribed(resolve);
        channel.error((error) => reject(new Error(`subscription error on ${name}: ${JSON.stringify(error)}`)));
      }),
      5_000,
      `Echo's subscription to ${name}`,
    );
  }

  /** What Laravel's `broadcast(new Event)` does, through the app (toOthers with `socketId`). */
  async function broadcast(channel, event, data, socketId) {
    const response = await fetch(`${app.url}/broadcast`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(socketId ? { "X-Socket-ID": socketId } : {}) },
      body: JSON.stringify({ channel, event, data }),
    });
    assert.equal(response.status, 200, await response.text());
  }

  before(async () => {
    server = await Server.start();
    app = await startApp(server);
  });

  after(async () => {
    for (const e of echoes) e.disconnect();
    await app.close();
    await server.stop();
  });

  test("Echo.channel().listen() gets a namespaced Laravel event", async () => {
    const e = await echo();
    const received = new Collector();
    const channel = e.channel("orders").listen("OrderShipped", received.push);
    await subscribed(channel, "orders");
    await broadcast("orders", "App\\Events\\OrderShipped", { order: { id: 1 } });
    const [event] = await received.waitFor(1, "OrderShipped");
    assert.deepEqual(event, { order: { id: 1 } });
  });

  test("Echo.private() is authorized by /broadcasting/auth and receives", async () => {
    const e = await echo();
    const received = new Collector();
    const channel = e.private("orders.5").listen(".status-updated", received.push);
    await subscribed(channel, "private-orders.5");
    const auth = app.requests.find((r) => r.url === "/broadcasting/auth" && r.body.includes("private-orders.5"));
    assert.ok(auth, "Echo called /broadcasting/auth");
    assert.equal(auth.headers["x-csrf-token"], "csrf-of-the-page");
    await broadcast("private-orders.5", "status-updated", { status: "paid" });
    assert.deepEqual((await received.waitFor(1, "status-updated"))[0], { status: "paid" });
  });

  test("Echo.join(): here, joining, leaving", async () => {
    const alice = await echo({ user_id: "alice", user_name: "Alice" });
    const here = new Collector();
    const joining = new Collector();
    const leaving = new Collector();
    alice.join("room.1").here(here.push).joining(joining.push).leaving(leaving.push);
    const [aliceHere] = await here.waitFor(1, "alice's here()");
    assert.deepEqual(aliceHere, [{ name: "Alice" }]);

    const bob = await echo({ user_id: "bob", user_name: "Bob" });
    const bobHere = new Collector();
    bob.join("room.1").here(bobHere.push);
    const [members] = await bobHere.waitFor(1, "bob's here()");
    assert.deepEqual(
      members.map((m) => m.name).sort(),
      ["Alice", "Bob"],
    );
    assert.deepEqual((await joining.waitFor(1, "alice sees bob joining"))[0], { name: "Bob" });

    bob.disconnect();
    assert.deepEqual((await leaving.waitFor(1, "alice sees bob leaving"))[0], { name: "Bob" });

    // Echo.leave() unsubscribes without closing the connection.
    const carol = await echo({ user_id: "carol", user_name: "Carol" });
    const carolHere = new Collector();
    carol.join("room.1").here(carolHere.push);
    await carolHere.waitFor(1, "carol's here()");
    assert.deepEqual((await joining.waitFor(2, "alice sees carol joining"))[1], { name: "Carol" });
    carol.leave("room.1");
    assert.deepEqual((await leaving.waitFor(2, "alice sees carol leaving"))[1], { name: "Carol" });
    assert.equal(carol.connector.pusher.connection.state, "connected");
  });

  test("whisper() on a private channel reaches listenForWhisper() of the others", async () => {
    const a = await echo();
    const b = await echo();
    const heard = new Collector();
    const channelA = a.private("chat.9");
    const channelB = b.private("chat.9").listenForWhisper("typing", heard.push);
    await Promise.all([subscribed(channelA, "private-chat.9"), subscribed(channelB, "private-chat.9")]);
    channelA.whisper("typing", { name: "a" });
    assert.deepEqual((await heard.waitFor(1, "the whisper"))[0], { name: "a" });
  });

  test("toOthers(): the X-Socket-ID connection does not get the event, the others do", async () => {
    const sender = await echo();
    const other = await echo();
    const atSender = new Collector();
    const atOther = new Collector();
    const senderChannel = sender.channel("feed").listen(".posted", atSender.push);
    const otherChannel = other.channel("feed").listen(".posted", atOther.push);
    await Promise.all([subscribed(senderChannel, "feed"), subscribed(otherChannel, "feed")]);
    assert.match(sender.socketId(), /^\d+\.\d+$/);
    await broadcast("feed", "posted", { n: 1 }, sender.socketId());
    await broadcast("feed", "posted", { n: 2 });
    // Both events are on one channel, in order: the second at the sender shows the first
    // was skipped, not late.
    await atSender.waitFor(1, "the second post at the sender");
    assert.deepEqual(atSender.items, [{ n: 2 }]);
    assert.deepEqual(await atOther.waitFor(2, "both posts at the other"), [{ n: 1 }, { n: 2 }]);
  });
});
