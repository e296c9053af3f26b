// The client's logic against a scripted WebSocket and a fake clock: exact, fast, no network.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  type ClientEvents,
  type ClientOptions,
  type Message,
  type SubscriptionEvent,
  type WebSocketConstructor,
  WirehubClient,
  WirehubError,
} from "../src/index.js";
import { FakeClock, flush, seededRandom } from "./helpers/fake-clock.js";
import { type FakeSocket, fakeWebSocket } from "./helpers/fake-socket.js";

type Recorded = { [K in keyof ClientEvents]: [K, ClientEvents[K]] }[keyof ClientEvents];

const EVENTS: (keyof ClientEvents)[] = [
  "state",
  "connecting",
  "connected",
  "disconnected",
  "reconnecting",
  "recoveryFailed",
  "resync",
  "subscriptionEnded",
  "subscribeRetry",
  "error",
  "stopped",
];

function setup(options: ClientOptions = {}, url = "ws://server.test/ws") {
  const clock = new FakeClock();
  const fake = fakeWebSocket();
  const client = new WirehubClient(url, { WebSocket: fake.WebSocket, clock, random: () => 0.5, ...options });
  const events: Recorded[] = [];
  for (const name of EVENTS) client.on(name, (payload: any) => events.push([name, payload] as Recorded));
  const of = <K extends keyof ClientEvents>(name: K): ClientEvents[K][] =>
    events.filter((event) => event[0] === name).map((event) => event[1] as ClientEvents[K]);
  return { clock, fake, client, events, of };
}

/** Settles a promise to its outcome so tests can look at it synchronously later. */
function outcome<T>(promise: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const state: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { value, settled: true }),
    (error: unknown) => Object.assign(state, { error, settled: true }),
  );
  return state;
}

async function connected(options: ClientOptions = {}) {
  const env = setup(options);
  const connecting = env.client.connect();
  env.fake.last().accept();
  await connecting;
  return env;
}

describe("client against a scripted server", () => {
  test("the global WebSocket type fits the option (browsers)", () => {
    // Compile-time check: the DOM's WebSocket class is accepted as is.
    const check = (ctor: typeof WebSocket): WebSocketConstructor => ctor;
    assert.equal(typeof check, "function");
  });

  test("bad URLs and a missing WebSocket are reported at construction", () => {
    assert.throws(() => new WirehubClient("http://x/ws", { WebSocket: fakeWebSocket().WebSocket }), (e: unknown) => e instanceof WirehubError && e.code === "invalid_url");
    assert.throws(() => new WirehubClient("not a url", { WebSocket: fakeWebSocket().WebSocket }), /invalid URL/);
    if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === "undefined") {
      assert.throws(() => new WirehubClient("ws://x/ws"), /pass one/);
    }
    assert.throws(() => new WirehubClient("ws://x/ws", { WebSocket: fakeWebSocket().WebSocket, publishBuffer: -1 }), TypeError);
    assert.throws(() => new WirehubClient("ws://x/ws", { WebSocket: fakeWebSocket().WebSocket, backoff: { initial: -5 } }), /backoff.initial/);
    // An explicit undefined takes the default.
    const { fake, client, of } = setup({ backoff: { initial: undefined, max: 4000 } });
    void client.connect();
    fake.last().failUpgrade();
    assert.equal(of("reconnecting")[0]?.delay, 1000);
  });

  test("subscribe, publish, ack and message round trip; the token goes in the query", async () => {
    const { fake, client, of } = setup({ token: "a b&c" });
    assert.equal(client.state, "idle");
    const connecting = client.connect();
    const socket = fake.last();
    assert.equal(socket.url, "ws://server.test/ws?token=a+b%26c");
    socket.accept("sess-1");
    await connecting;
    assert.equal(client.state, "connected");
    assert.equal(client.session, "sess-1");
    assert.deepEqual(of("connected"), [{ session: "sess-1" }]);

    const received: Message[] = [];
    const subscribing = client.subscribe("chat", (m) => received.push(m));
    const [subscribe] = socket.sentOf("subscribe");
    assert.deepEqual(subscribe, { type: "subscribe", id: 1, channel: "chat" });
    socket.ackSubscribes("e1", 4);
    const subscription = await subscribing;
    assert.deepEqual(subscription.position, { epoch: "e1", offset: 4 });

    const publishing = client.publish("chat", { text: "hi" });
    const [sent] = socket.sentOf("publish");
    assert.match(String(sent?.idempotency_key), /^[0-9a-f]{32}$/);
    assert.deepEqual(socket.sentOf("publish"), [
      { type: "publish", id: 2, channel: "chat", data: { text: "hi" }, idempotency_key: sent?.idempotency_key },
    ]);
    socket.receive({ type: "ack", id: 2, offset: 5 });
    assert.equal(await publishing, 5);
    socket.receive({ type: "message", channel: "chat", data: { text: "hi" }, offset: 5 });
    assert.deepEqual(received, [{ type: "message", channel: "chat", data: { text: "hi" }, offset: 5 }]);
    assert.deepEqual(subscription.position, { epoch: "e1", offset: 5 });

    await assert.rejects(client.subscribe("chat"), { code: "already_subscribed" });
    await assert.rejects(client.subscribe("bad channel"), { code: "invalid_channel" });
    await assert.rejects(client.publish("chat", undefined), { code: "invalid_data" });
    socket.receive({ type: "error", id: 99, code: "rate_limited", message: "slow down" });
    assert.equal(of("error").at(-1)?.code, "rate_limited");
  });

  test("resubscribes with since; the replay is delivered once, duplicates are dropped", async () => {
    const { clock, fake, client, of } = await connected();
    const received: number[] = [];
    const subscribing = client.subscribe("news", (m) => received.push(m.offset));
    fake.last().ackSubscribes("e1", 5);
    await subscribing;
    fake.last().receive({ type: "message", channel: "news", data: 6, offset: 6 });
    fake.last().receive({ type: "message", channel: "news", data: 7, offset: 7 });

    fake.last().serverClose(1001, "server shutting down");
    assert.deepEqual(of("disconnected"), [{ code: 1001, reason: "server shutting down" }]);
    // 1001 reconnects with the first ceiling: random(0, 1000) with a draw of 0.5.
    assert.deepEqual(of("reconnecting"), [{ attempt: 1, delay: 500 }]); // healthy: attempts start over
    clock.advance(499);
    assert.equal(fake.sockets.length, 1);
    clock.advance(1);
    assert.equal(fake.sockets.length, 2);

    const second = fake.last();
    second.accept("sess-2");
    assert.deepEqual(second.sentOf("subscribe"), [{ type: "subscribe", id: 2, channel: "news", since: { epoch: "e1", offset: 7 } }]);
    second.ackSubscribes("e1", 9, true);
    for (const offset of [8, 9, 9, 7]) second.receive({ type: "message", channel: "news", data: offset, offset });
    assert.deepEqual(received, [6, 7, 8, 9]);
    assert.deepEqual(of("recoveryFailed"), []);
  });

  test("issue 13: a resubscription that lost nothing emits recovered, one that lost messages only recoveryFailed", async () => {
    const { clock, fake, client, of } = await connected();
    const recovered: ClientEvents["recovered"][] = [];
    client.on("recovered", (payload) => recovered.push(payload));
    const subscribing = client.subscribe("news", () => {});
    fake.last().ackSubscribes("e1", 5);
    await subscribing;
    assert.deepEqual(recovered, [], "a first subscribe recovers nothing");

    fake.last().serverClose(1001, "server shutting down");
    clock.advance(500);
    fake.last().accept();
    fake.last().ackSubscribes("e1", 8, true);
    assert.deepEqual(recovered, [
      { channel: "news", since: { epoch: "e1", offset: 5 }, position: { epoch: "e1", offset: 8 } },
    ]);
    assert.deepEqual(of("recoveryFailed"), []);

    fake.last().serverClose(1001, "server shutting down");
    clock.advance(500);
    fake.last().accept();
    fake.last().ackSubscribes("e2", 0, false);
    assert.equal(recovered.length, 1, "a loss is not a recovery");
    assert.equal(of("recoveryFailed").length, 1);
  });

  test("a gap that cannot be recovered is reported, then deliveries go on", async () => {
    const { clock, fake, client, of } = await connected();
    const lost: unknown[] = [];
    const received: number[] = [];
    const subscribing = client.subscribe("news", {
      onMessage: (m) => received.push(m.offset),
      onRecoveryFailed: (event) => lost.push(event),
    });
    fake.last().ackSubscribes("e1", 3);
    await subscribing;
    fake.last().serverClose(4200, "reconnect");
    clock.advance(500);
    fake.last().accept();
    fake.last().ackSubscribes("e2", 0, false);
    const expected = { channel: "news", since: { epoch: "e1", offset: 3 }, position: { epoch: "e2", offset: 0 } };
    assert.deepEqual(of("recoveryFailed"), [expected]);
    assert.deepEqual(lost, [{ type: "recoveryFailed", ...expected }]);
    fake.last().receive({ type: "message", channel: "news", data: null, offset: 1 });
    assert.deepEqual(received, [1]);
  });

  for (const code of [4001, 4003]) {
    test(`close ${code} stops the client and fails what waits`, async () => {
      const { clock, fake, client, of } = await connected();
      const subscribing = outcome(client.subscribe("chat"));
      const publishing = outcome(client.publish("chat", 1));
      fake.last().serverClose(code, "no");
      await flush();
      assert.equal(client.state, "closed");
      assert.equal(client.stopError?.code, "rejected");
      assert.equal(client.stopError?.closeCode, code);
      assert.equal(client.stopError?.fatal, true);
      assert.equal(of("stopped")[0]?.error?.closeCode, code);
      assert.deepEqual(of("reconnecting"), []);
      assert.equal((subscribing.error as WirehubError).code, "rejected");
      assert.equal((publishing.error as WirehubError).code, "rejected");
      clock.advance(120_000);
      assert.equal(fake.sockets.length, 1);
      await assert.rejects(client.publish("chat", 2), { code: "rejected" });
      await assert.rejects(client.connect(), { code: "rejected" });
    });
  }

  test("each close-code range gets its reconnect delay", async () => {
    // With a draw of 0.5: reconnect → k = 0 → 500 ms; back off → k ≥ 1 → 1000 ms.
    const cases: [number, number][] = [
      [1000, 500],
      [1001, 500],
      [4200, 500],
      [4299, 500],
      [4100, 1000],
      [4101, 1000],
      [4102, 1000],
      [1006, 1000],
      [1009, 1000],
      [1011, 1000],
    ];
    for (const [code, delay] of cases) {
      const { fake, of } = await connected();
      fake.last().serverClose(code);
      assert.deepEqual(of("reconnecting"), [{ attempt: 1, delay }], `close ${code}`);
    }
  });

  test("a failed upgrade backs off (browsers show only 1006); HTTP 401 and 403 stop (Node)", async () => {
    {
      const { fake, client, of } = setup();
      void client.connect();
      fake.last().failUpgrade();
      assert.equal(of("error")[0]?.code, "connect_failed");
      assert.deepEqual(of("reconnecting"), [{ attempt: 2, delay: 1000 }]);
      assert.equal(client.state, "reconnecting");
    }
    {
      const { fake, client, of } = setup();
      void client.connect();
      fake.last().failUpgrade(503);
      assert.match(of("error")[0]?.message ?? "", /HTTP 503/);
      assert.equal(of("reconnecting").length, 1);
    }
    for (const status of [401, 403]) {
      const { clock, fake, client, of } = setup();
      const connecting = client.connect();
      fake.last().failUpgrade(status);
      await assert.rejects(connecting, { code: "unauthorized", status });
      assert.equal(client.state, "closed");
      assert.deepEqual(of("reconnecting"), []);
      clock.advance(60_000);
      assert.equal(fake.sockets.length, 1);
    }
  });

  test("the backoff resets only once a connection proved healthy", async () => {
    const { clock, fake, client, of } = setup({ healthyAfter: 10_000 });
    void client.connect();
    void client.subscribe("chat");
    // Accepted, welcomed, but the resubscription is never answered: not healthy.
    for (let i = 0; i < 3; i++) {
      fake.last().accept();
      fake.last().serverClose(1000);
      clock.advance(of("reconnecting").at(-1)!.delay);
    }
    assert.deepEqual(
      of("reconnecting").map((r) => r.delay),
      [500, 1000, 2000],
    );
    // Welcome and every resubscription answered: healthy, back to the first ceiling.
    fake.last().accept();
    fake.last().ackSubscribes();
    fake.last().serverClose(1000);
    assert.equal(of("reconnecting").at(-1)?.delay, 500);
    assert.equal(of("reconnecting").at(-1)?.attempt, 1);
    clock.advance(500);
    // Up for healthyAfter without the answer: healthy too.
    fake.last().serverClose(1000);
    clock.advance(1000);
    fake.last().accept();
    clock.advance(10_000);
    fake.last().serverClose(1000);
    assert.equal(of("reconnecting").at(-1)?.delay, 500);
  });

  test("a connection without welcome within connectTimeout is given up", () => {
    const { clock, fake, client, of } = setup({ connectTimeout: 3000 });
    void client.connect();
    fake.last().open();
    clock.advance(2999);
    assert.equal(of("error").length, 0);
    clock.advance(1);
    assert.equal(fake.sockets[0]?.terminated, true);
    assert.match(of("error")[0]?.message ?? "", /no welcome within 3000 ms/);
    assert.equal(client.state, "reconnecting");
  });

  test("a silent server gets an app-level ping and is dropped without pong", async () => {
    const { clock, fake, client, of } = await connected({ idleTimeout: 45_000, pongTimeout: 10_000 });
    const socket = fake.last();
    clock.advance(30_000);
    socket.receive({ type: "pong" }); // any frame is a sign of life
    clock.advance(44_999);
    assert.deepEqual(socket.sentOf("ping"), []);
    clock.advance(1);
    assert.deepEqual(socket.sentOf("ping"), [{ type: "ping", id: 1 }]);
    socket.receive({ type: "pong", id: 1 });
    clock.advance(10_000);
    assert.equal(client.state, "connected");
    // Silence again: a second ping 45 s after the pong, then nothing for 10 s.
    clock.advance(35_000);
    assert.equal(socket.sentOf("ping").length, 2);
    clock.advance(9999);
    assert.equal(client.state, "connected");
    clock.advance(1);
    assert.equal(socket.terminated, true);
    assert.match(of("disconnected")[0]?.reason ?? "", /presumed dead/);
    assert.equal(of("reconnecting")[0]?.delay, 1000);
  });

  test("network back online: a client waiting to reconnect tries at once", async () => {
    const network = new EventTarget();
    const { clock, fake, client, of } = await connected({
      network,
      backoff: { initial: 60_000, max: 60_000, jitter: "none" },
    });
    fake.last().serverClose(1006);
    assert.equal(client.state, "reconnecting");
    assert.equal(of("reconnecting")[0]?.delay, 60_000);
    assert.equal(fake.sockets.length, 1);
    clock.advance(5000);
    network.dispatchEvent(new Event("online"));
    assert.equal(fake.sockets.length, 2, "a new attempt right away");
    assert.equal(client.state, "connecting");
    fake.last().accept("s2");
    assert.equal(client.state, "connected");
    // The cancelled wait does not fire later.
    clock.advance(60_000);
    assert.equal(fake.sockets.length, 2);
    // After close() the client no longer listens.
    await client.close();
    network.dispatchEvent(new Event("online"));
    assert.equal(fake.sockets.length, 2);
  });

  test("a network change while connected is checked with a ping", async () => {
    const network = new EventTarget();
    const { clock, fake, client, of } = await connected({ network, idleTimeout: 45_000, pongTimeout: 3000 });
    const socket = fake.last();
    network.dispatchEvent(new Event("offline"));
    assert.deepEqual(socket.sentOf("ping"), [{ type: "ping", id: 1 }]);
    network.dispatchEvent(new Event("online"));
    assert.equal(socket.sentOf("ping").length, 1, "one check at a time");
    socket.receive({ type: "pong", id: 1 });
    clock.advance(3000);
    assert.equal(client.state, "connected", "the connection survived the change");
    // Next change, and the connection did not survive it: dropped after pongTimeout.
    network.dispatchEvent(new Event("online"));
    assert.equal(socket.sentOf("ping").length, 2);
    clock.advance(2999);
    assert.equal(client.state, "connected");
    clock.advance(1);
    assert.equal(socket.terminated, true);
    assert.match(of("disconnected")[0]?.reason ?? "", /presumed dead/);
  });

  test("malformed frames are reported and ignored; the connection stays", async () => {
    const { fake, client, of } = await connected();
    const received: unknown[] = [];
    const subscribing = client.subscribe("c", (m) => received.push(m.data));
    fake.last().ackSubscribes();
    await subscribing;
    fake.last().receive("this is not json");
    fake.last().receive("[1,2]");
    fake.last().receive({ type: "message", channel: "c", offset: 1 });
    fake.last().receive({ type: "ack", id: 1, offset: "x" });
    fake.last().receiveBinary(new Uint8Array([1, 2, 3]));
    fake.last().receive({ type: "from_a_newer_server" });
    fake.last().receive({ type: "message", channel: "c", data: "ok", offset: 1, extra: true });
    assert.deepEqual(
      of("error").map((e) => e.code),
      ["invalid_frame", "invalid_frame", "invalid_frame", "invalid_frame", "invalid_frame"],
    );
    assert.equal(client.state, "connected");
    assert.deepEqual(received, ["ok"]);
  });

  test("publishes wait in a bounded buffer while disconnected and go out in order after the resubscriptions", async () => {
    const { fake, client } = setup({ publishBuffer: 2 });
    void client.connect();
    const subscribing = client.subscribe("chat");
    const first = client.publish("chat", "a");
    const second = client.publish("chat", "b");
    await assert.rejects(client.publish("chat", "c"), (e: unknown) => e instanceof WirehubError && e.code === "buffer_full" && e.capacity === 2);
    const socket = fake.last();
    socket.accept();
    assert.deepEqual(
      socket.sent.map((frame) => [frame.type, frame.data ?? frame.channel]),
      [
        ["subscribe", "chat"],
        ["publish", "a"],
        ["publish", "b"],
      ],
    );
    socket.ackSubscribes();
    await subscribing;
    const [a, b] = socket.sentOf("publish");
    socket.receive({ type: "ack", id: b!.id, offset: 2 });
    socket.receive({ type: "ack", id: a!.id, offset: 1 });
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
  });

  test("with retryPublishes off, a sent publish whose ack was lost fails with disconnected and is not resent", async () => {
    const { clock, fake, client } = await connected({ retryPublishes: false });
    const publishing = client.publish("chat", "x");
    assert.equal(fake.last().sentOf("publish")[0]?.idempotency_key, undefined);
    fake.last().serverClose(1001);
    await assert.rejects(publishing, { code: "disconnected" });
    clock.advance(500);
    fake.last().accept();
    assert.deepEqual(fake.last().sentOf("publish"), []);
  });

  test("publishes whose ack was lost are sent again, first and in order, with the same keys", async () => {
    const { clock, fake, client } = await connected();
    const first = fake.last();
    const lost = [client.publish("chat", 1), client.publish("chat", 2)];
    const sent = first.sentOf("publish");
    assert.equal(sent.length, 2);
    const keys = sent.map((frame) => frame.idempotency_key as string);
    assert.ok(keys.every((key) => /^[0-9a-f]{32}$/.test(key)), keys.join());
    assert.notEqual(keys[0], keys[1]);
    first.serverClose(1001);
    const later = client.publish("chat", 3); // held while disconnected
    clock.advance(1000);
    const second = fake.last();
    assert.notEqual(second, first);
    second.accept("s2");
    const resent = second.sentOf("publish");
    assert.deepEqual(
      resent.map((frame) => [frame.data, frame.idempotency_key]),
      [[1, keys[0]], [2, keys[1]], [3, resent[2]?.idempotency_key]],
    );
    // The server had published the first two: it answers them as duplicates.
    second.receive({ type: "ack", id: resent[0]?.id, offset: 1, duplicate: true });
    second.receive({ type: "ack", id: resent[1]?.id, offset: 2, duplicate: true });
    second.receive({ type: "ack", id: resent[2]?.id, offset: 3 });
    assert.deepEqual(await Promise.all([...lost, later]), [1, 2, 3]);
  });

  test("a stop fails unacknowledged publishes instead of holding them", async () => {
    const { fake, client } = await connected();
    const publishing = client.publish("chat", "x");
    fake.last().serverClose(4003, "forbidden");
    await assert.rejects(publishing, { code: "rejected" });
  });

  test("a held publish whose caller timed out is not sent", async () => {
    const { clock, fake, client } = setup({ requestTimeout: 1000 });
    void client.connect();
    const publishing = client.publish("chat", "late");
    clock.advance(1000);
    await assert.rejects(publishing, { code: "timeout" });
    fake.last().accept();
    assert.deepEqual(fake.last().sentOf("publish"), []);
  });

  test("a refused subscription rejects; a revoked one ends with an event", async () => {
    const { fake, client, of } = await connected();
    const refused = client.subscribe("secret");
    const [frame] = fake.last().sentOf("subscribe");
    fake.last().receive({ type: "error", id: frame!.id, code: "forbidden", message: "not allowed" });
    await assert.rejects(refused, { code: "forbidden", fromServer: true, channel: "secret" });

    const ended: unknown[] = [];
    const subscribing = client.subscribe("chat", { onEnded: (error) => ended.push(error?.code) });
    fake.last().ackSubscribes();
    const subscription = await subscribing;
    fake.last().receive({ type: "unsubscribed", channel: "chat" });
    assert.deepEqual(ended, ["revoked"]);
    assert.equal(subscription.active, false);
    assert.equal(of("subscriptionEnded")[0]?.error.code, "revoked");
  });

  test("refreshToken sends refresh when connected, and is used for the next upgrade", async () => {
    const { clock, fake, client } = await connected({ token: "old" });
    const refreshing = client.refreshToken("new");
    const [frame] = fake.last().sentOf("refresh");
    assert.deepEqual(frame, { type: "refresh", id: 1, token: "new" });
    fake.last().receive({ type: "refreshed", id: 1, expires: 2_000_000_000 });
    await refreshing;
    const refused = client.refreshToken("bad");
    fake.last().receive({ type: "error", id: 2, code: "unauthorized", message: "expired" });
    await assert.rejects(refused, { code: "unauthorized", fromServer: true });
    fake.last().serverClose(1001);
    await client.refreshToken("newest");
    clock.advance(500);
    assert.equal(fake.last().url, "ws://server.test/ws?token=newest");
  });

  test("the async iterator yields events in order; leaving the loop unsubscribes", async () => {
    const { fake, client } = await connected();
    const subscribing = client.subscribe<number>("feed");
    fake.last().ackSubscribes("e1", 0);
    const subscription = await subscribing;
    for (const offset of [1, 2, 3]) fake.last().receive({ type: "message", channel: "feed", data: offset * 10, offset });
    const seen: SubscriptionEvent<number>[] = [];
    for await (const event of subscription) {
      seen.push(event);
      if (seen.length === 3) break;
    }
    assert.deepEqual(
      seen.map((e) => (e.type === "message" ? e.data : e.type)),
      [10, 20, 30],
    );
    assert.deepEqual(fake.last().sentOf("unsubscribe"), [{ type: "unsubscribe", id: 2, channel: "feed" }]);
    assert.equal(subscription.active, false);
  });

  test("issue 9: a slow async iterator is caught up from history, every message in order, none dropped", async () => {
    const { fake, client, of } = await connected({ subscriptionBuffer: 4 });
    const history = new ChannelHistory("feed");
    const subscribing = client.subscribe<number>("feed");
    history.answer(fake.last());
    const subscription = await subscribing;
    // 30 messages arrive at once; the queue holds 4.
    for (let i = 0; i < 30; i++) history.publish(fake.last());
    assert.equal(subscription.queued, 4);
    assert.deepEqual(fake.last().sentOf("unsubscribe"), [], "nothing is asked for before the consumer drained");
    const iterator = subscription[Symbol.asyncIterator]();
    const seen: (number | string)[] = [];
    while (seen.length < 30) {
      const { value } = await iterator.next();
      const event = value as SubscriptionEvent<number>;
      seen.push(event.type === "message" ? event.offset : event.type);
      history.answer(fake.last());
      assert.ok(subscription.queued <= 4, `the queue stays bounded (${subscription.queued})`);
    }
    assert.deepEqual(seen, Array.from({ length: 30 }, (_, i) => i + 1));
    // The first catch-up starts from the last message the queue took (4), once it drained to
    // half; a replay larger than the queue pauses again and goes on from where it stopped.
    const since = fake.last().sentOf("subscribe").slice(1).map((frame) => frame.since.offset);
    assert.equal(since[0], 4);
    assert.ok(since.length >= 3, `several catch-ups: ${since.join(",")}`);
    assert.deepEqual(since, [...since].sort((a, b) => a - b));
    assert.deepEqual(of("resync")[0], { channel: "feed", since: { epoch: "e1", offset: 4 }, cause: "slow_consumer" });
    assert.deepEqual(of("recoveryFailed"), []);
    // Live messages go on.
    history.publish(fake.last());
    const { value } = await iterator.next();
    assert.equal((value as Message).offset, 31);
  });

  test("issue 9: history that no longer covers the position gives recoveryFailed at the place of the loss, then live messages", async () => {
    const { fake, client, of } = await connected({ subscriptionBuffer: 2 });
    const history = new ChannelHistory("feed", 3);
    const subscribing = client.subscribe<number>("feed");
    history.answer(fake.last());
    const subscription = await subscribing;
    for (let i = 0; i < 10; i++) history.publish(fake.last());
    const iterator = subscription[Symbol.asyncIterator]();
    const next = async (): Promise<number | string> => {
      const { value } = await iterator.next();
      const event = value as SubscriptionEvent;
      history.answer(fake.last());
      return event.type === "message" ? event.offset : `${event.type} ${JSON.stringify(event)}`;
    };
    assert.equal(await next(), 1);
    // Drained to half: catching up from 2, which history (8..10) no longer holds.
    assert.equal(await next(), 2);
    const lost = { channel: "feed", since: { epoch: "e1", offset: 2 }, position: { epoch: "e1", offset: 10 } };
    assert.equal(await next(), `recoveryFailed ${JSON.stringify({ type: "recoveryFailed", ...lost })}`);
    assert.deepEqual(of("recoveryFailed"), [lost]);
    history.publish(fake.last());
    assert.equal(await next(), 11);
  });

  test("issue 9: a callback that returns a promise holds the next delivery; a full queue catches up the same way", async () => {
    const { fake, client } = await connected({ subscriptionBuffer: 2 });
    const history = new ChannelHistory("jobs");
    const seen: number[] = [];
    let release: (() => void) | undefined;
    let running = 0;
    const subscribing = client.subscribe<number>("jobs", (message) => {
      running += 1;
      assert.equal(running, 1, "one callback at a time");
      seen.push(message.offset);
      return new Promise<void>((resolve) => {
        release = () => {
          running -= 1;
          resolve();
        };
      });
    });
    history.answer(fake.last());
    await subscribing;
    for (let i = 0; i < 8; i++) history.publish(fake.last());
    assert.deepEqual(seen, [1], "the second waits for the first's promise");
    while (seen.length < 8) {
      release?.();
      await flush();
      history.answer(fake.last());
    }
    release?.();
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(fake.last().sentOf("unsubscribe").length >= 1, "the full queue was caught up from history");
  });

  test("issue 9: synchronous callbacks are called at once, in order, with no catch-up", async () => {
    const { fake, client, of } = await connected({ subscriptionBuffer: 1 });
    const history = new ChannelHistory("ticks");
    const seen: number[] = [];
    const subscribing = client.subscribe("ticks", (message) => {
      seen.push(message.offset);
    });
    history.answer(fake.last());
    await subscribing;
    for (let i = 0; i < 500; i++) history.publish(fake.last());
    assert.equal(seen.length, 500);
    assert.deepEqual(seen.slice(-2), [499, 500]);
    assert.deepEqual(of("resync"), []);
  });

  test("issue 9: a gap from the server catches up from the last position handed over", async () => {
    const { fake, client, of } = await connected();
    const history = new ChannelHistory("news");
    const seen: number[] = [];
    const subscribing = client.subscribe("news", (message) => {
      seen.push(message.offset);
    });
    history.answer(fake.last());
    await subscribing;
    history.publish(fake.last());
    history.publish(fake.last());
    // The server skips 3..5 for this subscription and says so.
    history.skip(3);
    fake.last().receive({ type: "gap", channel: "news", epoch: "e1", offset: 5, from: 3, to: 5 });
    assert.deepEqual(of("resync"), [{ channel: "news", since: { epoch: "e1", offset: 2 }, cause: "gap" }]);
    assert.deepEqual(fake.last().sentOf("subscribe").at(-1)?.since, { epoch: "e1", offset: 2 });
    // A live message that arrives before the `subscribed` is not taken out of order.
    history.publish(fake.last());
    assert.deepEqual(seen, [1, 2]);
    history.answer(fake.last());
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(of("recoveryFailed"), []);
  });

  test("issue 9: a restoring subscribe refused with internal is retried with the same since after a jittered, growing delay; nothing lost or duplicated", async () => {
    const { clock, fake, client, of } = await connected();
    const history = new ChannelHistory("feed");
    const seen: number[] = [];
    const subscribing = client.subscribe("feed", (message) => {
      seen.push(message.offset);
    });
    history.answer(fake.last());
    const subscription = await subscribing;
    history.publish(fake.last());
    history.publish(fake.last());
    fake.last().serverClose(1012);
    history.skip(3);
    clock.advance(of("reconnecting").at(-1)!.delay);
    fake.last().accept("s2");
    let refuse = (): void => {
      const frame = fake.last().sentOf("subscribe").at(-1)!;
      assert.deepEqual(frame.since, { epoch: "e1", offset: 2 });
      frame.answered = true;
      fake.last().receive({ type: "error", id: frame.id, code: "internal", message: "broker unavailable" });
    };
    refuse();
    // random() = 0.5: half of 100 ms, then half of 200 ms.
    assert.deepEqual(
      of("subscribeRetry").map((r) => [r.channel, r.error.code, r.attempt, r.delay]),
      [["feed", "internal", 1, 50]],
    );
    assert.equal(subscription.active, true);
    assert.equal(fake.last().sentOf("subscribe").length, 1);
    clock.advance(49);
    assert.equal(fake.last().sentOf("subscribe").length, 1, "not before the delay");
    clock.advance(1);
    assert.equal(fake.last().sentOf("subscribe").length, 2);
    refuse();
    assert.deepEqual(of("subscribeRetry").at(-1)?.delay, 100);
    clock.advance(100);
    assert.equal(fake.last().sentOf("subscribe").length, 3);
    history.answer(fake.last());
    history.publish(fake.last());
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    assert.equal(fake.sockets.length, 2, "the connection stayed");
    assert.equal(client.state, "connected");
    assert.deepEqual(of("subscriptionEnded"), []);
    assert.deepEqual(of("recoveryFailed"), []);
    // After a `subscribed`, a later refusal starts from the first delay again.
    history.skip(1);
    fake.last().receive({ type: "gap", channel: "feed", epoch: "e1", offset: 7, from: 7, to: 7 });
    refuse = (): void => {
      const frame = fake.last().sentOf("subscribe").at(-1)!;
      assert.deepEqual(frame.since, { epoch: "e1", offset: 6 });
      frame.answered = true;
      fake.last().receive({ type: "error", id: frame.id, code: "internal", message: "broker unavailable" });
    };
    refuse();
    assert.deepEqual(of("subscribeRetry").at(-1)?.delay, 50);
    clock.advance(50);
    history.answer(fake.last());
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7]);
  });

  test("issue 9: a catch-up refused with rate_limited is retried; a link cut while waiting resubscribes once; a final refusal ends the subscription", async () => {
    const { clock, fake, client, of } = await connected();
    const history = new ChannelHistory("feed");
    const seen: number[] = [];
    const ended: unknown[] = [];
    const subscribing = client.subscribe("feed", {
      onMessage: (message) => {
        seen.push(message.offset);
      },
      onEnded: (error) => ended.push(error?.code),
    });
    history.answer(fake.last());
    const subscription = await subscribing;
    history.publish(fake.last());
    history.skip(2);
    fake.last().receive({ type: "gap", channel: "feed", epoch: "e1", offset: 3, from: 2, to: 3 });
    const catchUp = fake.last().sentOf("subscribe").at(-1)!;
    assert.deepEqual(catchUp.since, { epoch: "e1", offset: 1 });
    fake.last().receive({ type: "unsubscribed", id: fake.last().sentOf("unsubscribe").at(-1)!.id, channel: "feed" });
    fake.last().receive({ type: "error", id: catchUp.id, code: "rate_limited", message: "slow down" });
    catchUp.answered = true;
    assert.deepEqual(of("subscribeRetry").map((r) => r.error.code), ["rate_limited"]);
    // The link dies while the retry waits: the next connection resubscribes, the timer is gone.
    fake.last().serverClose(1006);
    clock.advance(of("reconnecting").at(-1)!.delay);
    fake.last().accept("s2");
    const restore = fake.last().sentOf("subscribe");
    assert.equal(restore.length, 1);
    assert.deepEqual(restore[0]!.since, { epoch: "e1", offset: 1 });
    clock.advance(10_000);
    assert.equal(fake.last().sentOf("subscribe").length, 1, "no retry on top of the resubscription");
    history.answer(fake.last());
    assert.deepEqual(seen, [1, 2, 3]);
    // A final refusal of a later catch-up ends the subscription as before.
    fake.last().receive({ type: "gap", channel: "feed", epoch: "e1", offset: 3 });
    const again = fake.last().sentOf("subscribe").at(-1)!;
    fake.last().receive({ type: "error", id: again.id, code: "forbidden", message: "not allowed" });
    assert.equal(subscription.active, false);
    assert.deepEqual(of("subscriptionEnded").map((e) => e.error.code), ["forbidden"]);
    assert.deepEqual(ended, ["forbidden"]);
    assert.equal(of("subscribeRetry").length, 1);
  });

  test("issue 9: a first subscribe refused with internal rejects with the error", async () => {
    const { fake, client, of } = await connected();
    const subscribing = client.subscribe("feed");
    const frame = fake.last().sentOf("subscribe").at(-1)!;
    fake.last().receive({ type: "error", id: frame.id, code: "internal", message: "broker unavailable" });
    await assert.rejects(subscribing, (error: unknown) => error instanceof WirehubError && error.code === "internal");
    assert.deepEqual(of("subscribeRetry"), []);
    // The channel is free again: the caller may try once more.
    const retry = client.subscribe("feed");
    fake.last().ackSubscribes("e1", 0);
    assert.equal((await retry).channel, "feed");
  });

  test("a gap that announces a new epoch: the new epoch's messages are handed over once, after the recoveryFailed", async () => {
    const { fake, client, of } = await connected();
    const events: string[] = [];
    const subscribing = client.subscribe("feed", {
      onMessage: (message) => {
        events.push(`${message.data as string}`);
      },
      onRecoveryFailed: (event) => {
        events.push(`lost ${event.since.epoch}:${event.since.offset}..${event.position.epoch}:${event.position.offset}`);
      },
    });
    fake.last().ackSubscribes("e1", 0);
    await subscribing;
    const socket = fake.last();
    socket.receive({ type: "message", channel: "feed", data: "e1:1", offset: 1 });
    socket.receive({ type: "message", channel: "feed", data: "e1:2", offset: 2 });
    // The stream restarted (e.g. Redis flushed): the server says where e2 goes on, then delivers e2's 1.
    socket.receive({ type: "gap", channel: "feed", epoch: "e2", offset: 0 });
    socket.receive({ type: "message", channel: "feed", data: "e2:1", offset: 1 });
    const unsubscribe = () => socket.receive({ type: "unsubscribed", id: socket.sentOf("unsubscribe").at(-1)!.id, channel: "feed" });
    const first = socket.sentOf("subscribe").at(-1)!;
    assert.deepEqual(first.since, { epoch: "e1", offset: 2 });
    unsubscribe();
    socket.receive({ type: "subscribed", id: first.id, channel: "feed", epoch: "e2", offset: 1, recovered: false });
    // The loss ends where e2 goes on; e2 is caught up from there.
    const second = socket.sentOf("subscribe").at(-1)!;
    assert.notEqual(second.id, first.id);
    assert.deepEqual(second.since, { epoch: "e2", offset: 0 });
    unsubscribe();
    socket.receive({ type: "subscribed", id: second.id, channel: "feed", epoch: "e2", offset: 1, recovered: true });
    socket.receive({ type: "message", channel: "feed", data: "e2:1", offset: 1 });
    socket.receive({ type: "message", channel: "feed", data: "e2:2", offset: 2 });
    assert.deepEqual(events, ["e1:1", "e1:2", "lost e1:2..e2:0", "e2:1", "e2:2"]);
    assert.deepEqual(of("recoveryFailed"), [
      { channel: "feed", since: { epoch: "e1", offset: 2 }, position: { epoch: "e2", offset: 0 } },
    ]);
  });

  test("a gap that announces a new epoch while the queue is full: the catch-up still hands over the new epoch's messages", async () => {
    const { fake, client } = await connected({ subscriptionBuffer: 2 });
    const subscribing = client.subscribe<string>("feed");
    fake.last().ackSubscribes("e1", 0);
    const subscription = await subscribing;
    const socket = fake.last();
    for (let offset = 1; offset <= 3; offset++) socket.receive({ type: "message", channel: "feed", data: `e1:${offset}`, offset });
    // 3 was refused: the subscription is paused when the stream restarts.
    socket.receive({ type: "gap", channel: "feed", epoch: "e2", offset: 0 });
    socket.receive({ type: "message", channel: "feed", data: "e2:1", offset: 1 });
    // The server after the restart: e2 holds one message; e1's history is gone.
    const sinces: unknown[] = [];
    const answer = (): void => {
      for (const frame of socket.sentOf("subscribe")) {
        if (frame.answered === true) continue;
        frame.answered = true;
        sinces.push(frame.since);
        const since = frame.since as { epoch: string; offset: number };
        const recovered = since.epoch === "e2";
        socket.receive({ type: "subscribed", id: frame.id, channel: "feed", epoch: "e2", offset: 1, recovered });
        if (recovered) {
          for (let offset = since.offset + 1; offset <= 1; offset++) socket.receive({ type: "message", channel: "feed", data: `e2:${offset}`, offset });
        }
      }
    };
    const iterator = subscription[Symbol.asyncIterator]();
    const seen: string[] = [];
    while (seen.length < 4) {
      // Everything is scripted: what is to come is there once pending callbacks ran.
      const next = await Promise.race([iterator.next(), flush().then(() => undefined)]);
      assert.ok(next !== undefined, `nothing more after ${JSON.stringify(seen)}`);
      const event = next.value as SubscriptionEvent<string>;
      seen.push(
        event.type === "message"
          ? event.data
          : event.type === "recoveryFailed"
            ? `lost ${event.since.epoch}:${event.since.offset}..${event.position.epoch}:${event.position.offset}`
            : event.type,
      );
      answer();
    }
    assert.deepEqual(sinces.slice(0, 2), [{ epoch: "e1", offset: 2 }, { epoch: "e2", offset: 0 }]);
    assert.deepEqual(seen, ["e1:1", "e1:2", "lost e1:2..e2:0", "e2:1"]);
  });

  test("issue 9: another channel keeps flowing while one catches up", async () => {
    const { fake, client } = await connected({ subscriptionBuffer: 2 });
    const slow = new ChannelHistory("slow");
    const fast = new ChannelHistory("fast");
    const subscribingSlow = client.subscribe("slow");
    slow.answer(fake.last());
    const slowSubscription = await subscribingSlow;
    const fastSeen: number[] = [];
    const subscribingFast = client.subscribe("fast", (message) => {
      fastSeen.push(message.offset);
    });
    fast.answer(fake.last());
    await subscribingFast;
    for (let i = 0; i < 6; i++) {
      slow.publish(fake.last());
      fast.publish(fake.last());
    }
    assert.deepEqual(fastSeen, [1, 2, 3, 4, 5, 6]);
    const iterator = slowSubscription[Symbol.asyncIterator]();
    assert.equal(((await iterator.next()).value as Message).offset, 1);
    // `slow` is catching up (its subscribe is not answered yet); `fast` is not disturbed.
    assert.equal(fake.last().sentOf("subscribe").at(-1)?.channel, "slow");
    fast.publish(fake.last());
    assert.deepEqual(fastSeen, [1, 2, 3, 4, 5, 6, 7]);
    slow.answer(fake.last());
    const offsets: number[] = [];
    while (offsets.length < 5) {
      offsets.push(((await iterator.next()).value as Message).offset);
      slow.answer(fake.last());
    }
    assert.deepEqual(offsets, [2, 3, 4, 5, 6]);
  });

  test("issue 9: a link cut during the catch-up resubscribes from the same position on the next connection", async () => {
    const { clock, fake, client, of } = await connected({ subscriptionBuffer: 2 });
    const history = new ChannelHistory("feed");
    const subscribing = client.subscribe<number>("feed");
    history.answer(fake.last());
    const subscription = await subscribing;
    for (let i = 0; i < 6; i++) history.publish(fake.last());
    const iterator = subscription[Symbol.asyncIterator]();
    assert.equal(((await iterator.next()).value as Message).offset, 1);
    // The catch-up from 2 is sent; the link dies before the server answers it.
    assert.deepEqual(fake.last().sentOf("subscribe").at(-1)?.since, { epoch: "e1", offset: 2 });
    fake.last().serverClose(1006);
    clock.advance(of("reconnecting").at(-1)!.delay);
    fake.last().accept("s2");
    assert.deepEqual(fake.last().sentOf("subscribe"), [
      { type: "subscribe", id: fake.last().sentOf("subscribe")[0]!.id, channel: "feed", since: { epoch: "e1", offset: 2 } },
    ]);
    history.answer(fake.last());
    const offsets: number[] = [];
    while (offsets.length < 5) {
      offsets.push(((await iterator.next()).value as Message).offset);
      history.answer(fake.last());
    }
    assert.deepEqual(offsets, [2, 3, 4, 5, 6]);
  });

  test("issue 9: losses one after another with nobody reading are one report, and the queue stays bounded", async () => {
    const { clock, fake, client } = await connected({ subscriptionBuffer: 2 });
    const subscribing = client.subscribe("feed");
    fake.last().ackSubscribes("e1", 0);
    const subscription = await subscribing;
    for (let offset = 1; offset <= 3; offset++) fake.last().receive({ type: "message", channel: "feed", data: offset, offset });
    // Nobody reads; every reconnect finds the history gone.
    for (let epoch = 2; epoch <= 6; epoch++) {
      fake.last().serverClose(1012);
      clock.advance(30_000);
      fake.last().accept();
      fake.last().ackSubscribes(`e${epoch}`, 0, false);
      assert.ok(subscription.queued <= 3, `queued ${subscription.queued}`);
    }
    const iterator = subscription[Symbol.asyncIterator]();
    const events: SubscriptionEvent[] = [];
    for (let i = 0; i < 3; i++) events.push((await iterator.next()).value as SubscriptionEvent);
    assert.deepEqual(events, [
      { type: "message", channel: "feed", data: 1, offset: 1 },
      { type: "message", channel: "feed", data: 2, offset: 2 },
      { type: "recoveryFailed", channel: "feed", since: { epoch: "e1", offset: 2 }, position: { epoch: "e6", offset: 0 } },
    ]);
  });

  test("issue 9: what was queued before the end is still handed over, then onEnded", async () => {
    const { fake, client } = await connected();
    const history = new ChannelHistory("c");
    const calls: string[] = [];
    let release: (() => void) | undefined;
    const subscribing = client.subscribe("c", {
      onMessage: (message) => {
        calls.push(`message ${message.offset}`);
        return new Promise<void>((resolve) => (release = resolve));
      },
      onEnded: (error) => calls.push(`ended ${error?.code}`),
    });
    history.answer(fake.last());
    await subscribing;
    history.publish(fake.last());
    history.publish(fake.last());
    fake.last().receive({ type: "unsubscribed", channel: "c" });
    assert.deepEqual(calls, ["message 1"]);
    release?.();
    await flush();
    release?.();
    await flush();
    assert.deepEqual(calls, ["message 1", "message 2", "ended revoked"]);
  });

  test("close() ends subscriptions, fails waiting calls and sends close 1000", async () => {
    const { fake, client, of } = await connected();
    const subscribing = client.subscribe("a");
    fake.last().ackSubscribes();
    const subscription = await subscribing;
    const publishing = outcome(client.publish("a", 1));
    const iterating = (async () => {
      const seen: unknown[] = [];
      for await (const event of subscription) seen.push(event);
      return seen;
    })();
    const closing = client.close();
    fake.last().serverClose(1000);
    await closing;
    await flush();
    assert.deepEqual(await iterating, []);
    assert.equal((publishing.error as WirehubError).code, "closed");
    assert.deepEqual(fake.last().closedByClient, { code: 1000, reason: "client closed" });
    assert.equal(client.state, "closed");
    assert.deepEqual(of("stopped"), [{ error: undefined }]);
    await assert.rejects(client.subscribe("b"), { code: "closed" });
  });

  test("maxReconnects: 0 makes one attempt only", async () => {
    const { fake, client } = setup({ maxReconnects: 0 });
    const connecting = client.connect();
    fake.last().failUpgrade();
    await assert.rejects(connecting, { code: "connect_failed" });
    assert.equal(client.state, "closed");
  });

  test("a throwing listener does not break the client", async () => {
    const reported: unknown[] = [];
    const global = globalThis as { reportError?: (error: unknown) => void };
    const saved = global.reportError;
    global.reportError = (error) => reported.push(error);
    try {
      const { fake, client } = setup();
      client.on("connected", () => {
        throw new Error("listener bug");
      });
      const connecting = client.connect();
      fake.last().accept();
      await connecting;
      const subscribing = client.subscribe("c", () => {
        throw new Error("handler bug");
      });
      fake.last().ackSubscribes();
      await subscribing;
      fake.last().receive({ type: "message", channel: "c", data: 1, offset: 1 });
      assert.equal(client.state, "connected");
      assert.deepEqual(
        reported.map((e) => (e as Error).message),
        ["listener bug", "handler bug"],
      );
    } finally {
      if (saved === undefined) delete global.reportError;
      else global.reportError = saved;
    }
  });

  test("many clients dropped together reconnect spread over the window", () => {
    // 200 clients on one fake clock, each with its own random source; the server goes away
    // (1001) for all of them at the same instant, then refuses them for a while.
    const clock = new FakeClock();
    const clients = Array.from({ length: 200 }, (_, i) => {
      const fake = fakeWebSocket();
      const client = new WirehubClient("ws://server.test/ws", {
        WebSocket: fake.WebSocket,
        clock,
        random: seededRandom(1000 + i),
        connectTimeout: 3_600_000,
      });
      void client.connect();
      fake.last().accept();
      return { fake, client };
    });
    for (const { fake } of clients) fake.last().serverClose(1001);
    // Step through the first second in 10 ms slices, recording when each client comes back.
    const retriedAt: (number | undefined)[] = clients.map(() => undefined);
    for (let t = 10; t <= 1000; t += 10) {
      clock.advance(10);
      clients.forEach(({ fake }, i) => {
        if (fake.sockets.length >= 2 && retriedAt[i] === undefined) retriedAt[i] = t;
      });
    }
    const firstRetry = retriedAt.filter((t): t is number => t !== undefined);
    assert.equal(firstRetry.length, clients.length, "every client retried within the first ceiling (1 s)");
    const quarters = [0, 0, 0, 0];
    for (const t of firstRetry) quarters[Math.min(3, Math.floor((t - 1) / 250))]! += 1;
    for (const n of quarters) assert.ok(n >= 30 && n <= 70, `retries per 250 ms: ${quarters.join(",")}`);
    // The server keeps refusing: after five more failures everyone is at the cap (30 s) and
    // the delays still cover the whole [0, 30 s) window.
    const delays: number[] = [];
    for (const { fake, client } of clients) {
      client.on("reconnecting", ({ delay }) => delays.push(delay));
      fake.last().failUpgrade();
    }
    for (let round = 0; round < 6; round++) {
      delays.length = 0;
      clock.advance(30_000);
      for (const { fake } of clients) fake.last().failUpgrade();
    }
    assert.equal(delays.length, clients.length);
    assert.ok(Math.max(...delays) < 30_000);
    const tenths = new Array<number>(10).fill(0);
    for (const d of delays) tenths[Math.floor(d / 3000)]! += 1;
    for (const n of tenths) assert.ok(n >= 5 && n <= 40, `retries per 3 s at the cap: ${tenths.join(",")}`);
    for (const { client } of clients) void client.close();
  });
});

/**
 * Plays the server's side of one channel for the scripted socket: publishes with consecutive
 * offsets, keeps the last `keep` of them as history, and answers `unsubscribe` and `subscribe`
 * (with `since`: the replay, or `recovered: false` when history no longer covers it).
 */
class ChannelHistory {
  top = 0;
  readonly #answered = new WeakSet<Record<string, any>>();

  constructor(
    readonly channel: string,
    readonly keep = Number.POSITIVE_INFINITY,
    readonly epoch = "e1",
  ) {}

  /** The oldest offset still in history. */
  get oldest(): number {
    return Math.max(1, this.top - this.keep + 1);
  }

  /** Publishes one message and delivers it on `socket`. */
  publish(socket: FakeSocket): void {
    this.top += 1;
    socket.receive({ type: "message", channel: this.channel, data: this.top, offset: this.top });
  }

  /** Publishes `n` messages that this subscriber is not sent. */
  skip(n: number): void {
    this.top += n;
  }

  /** Answers, in order, every `unsubscribe` and `subscribe` of this channel not answered yet. */
  answer(socket: FakeSocket): void {
    for (const frame of socket.sent) {
      // `answered`: the test answered it itself (e.g. refused it).
      if (frame.channel !== this.channel || frame.answered === true || this.#answered.has(frame)) continue;
      if (frame.type === "unsubscribe") {
        this.#answered.add(frame);
        socket.receive({ type: "unsubscribed", id: frame.id, channel: this.channel });
      } else if (frame.type === "subscribe") {
        this.#answered.add(frame);
        const since = frame.since as { epoch: string; offset: number } | undefined;
        const recovered =
          since === undefined ? undefined : since.epoch === this.epoch && since.offset + 1 >= this.oldest;
        socket.receive({
          type: "subscribed",
          id: frame.id,
          channel: this.channel,
          epoch: this.epoch,
          offset: this.top,
          ...(recovered === undefined ? {} : { recovered }),
        });
        if (recovered === true && since !== undefined) {
          for (let offset = since.offset + 1; offset <= this.top; offset++) {
            socket.receive({ type: "message", channel: this.channel, data: offset, offset });
          }
        }
      }
    }
  }
}
