// The connector's rules on the real pusher-js (the package's Node build, over real sockets),
// connected to a scripted server written here with `ws`: it plays the server's side of the
// Pusher protocol with exact frames (`pusher:connection_established`,
// `pusher_internal:subscription_succeeded` with its `wirehub` position, events with theirs,
// `wirehub:recovered`, `wirehub:recovery_failed`, `wirehub:gap`) and closes the socket with
// 4200 for pusher-js to reconnect at once. Each scenario is driven step by step: the script
// waits for what pusher-js sends (a subscribe, a `wirehub:recover`) and, before looking at
// what the app's handlers got, for a marker frame sent after the frames under test to reach
// pusher-js's handlers; no sleeps but one wait of exactly `timeoutMs` past a deadline. Covered:
// order and each offset once, replays in parts, every failure reason, the timeout, the
// bound on held frames, a reconnect (also one whose handshake outlasts the timeout), disconnect() and a `wirehub:gap`
// during a recovery, unsubscribe (with frames still on the way, a cancelled subscription),
// the socket ids of earlier connections, stop(). The wirehub binary itself, with Laravel Echo
// and headless Chromium, is in clients/pusher-compat/test/recovery.test.js.
import assert from "node:assert/strict";
import { once } from "node:events";
import { afterEach, test } from "node:test";

import Pusher from "pusher-js";
import { WebSocketServer } from "ws";

import { recover } from "../index.js";

/** The longest any step waits (for a frame, a callback) before the test fails. */
const WAIT_MS = 5_000;

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Items that come over time; `until(predicate)` resolves with the first truthy result. */
class Collector {
  items = [];
  #checks = [];
  push = (item) => {
    this.items.push(item);
    this.#checks = this.#checks.filter((check) => !check());
  };
  until(predicate, what) {
    return within(
      new Promise((resolve) => {
        const check = () => {
          const found = predicate(this.items);
          if (found) resolve(found);
          return Boolean(found);
        };
        if (!check()) this.#checks.push(check);
      }),
      what,
    );
  }
}

/**
 * The server's side, scripted: accepts pusher-js's connections (numbered from 1, socket id
 * `1.N`), answers `pusher:connection_established` and `pusher:ping`, records every frame
 * pusher-js sends, and sends frames to the newest connection.
 */
class ScriptedServer {
  sockets = [];
  paths = [];
  /** Frames from pusher-js, parsed, with the number of their connection. */
  received = new Collector();
  /** Connections accepted, by number (also while the handshake is held). */
  accepted = new Collector();
  /** While true, new connections get no `pusher:connection_established` until {@link release}. */
  holding = false;
  #held = [];
  #taken = new Set();

  static async start() {
    const server = new ScriptedServer();
    await once(server.wss, "listening");
    return server;
  }

  constructor() {
    this.wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    this.wss.on("connection", (socket, request) => {
      const connection = this.sockets.push(socket);
      this.paths.push(request.url);
      socket.on("message", (raw) => {
        const message = JSON.parse(String(raw));
        if (message.event === "pusher:ping") socket.send(JSON.stringify({ event: "pusher:pong", data: "{}" }));
        this.received.push({ connection, ...message });
      });
      const establish = () =>
        socket.send(
          JSON.stringify({
            event: "pusher:connection_established",
            data: JSON.stringify({ socket_id: `1.${connection}`, activity_timeout: 120 }),
          }),
        );
      if (this.holding) this.#held.push(establish);
      else establish();
      this.accepted.push(connection);
    });
  }

  /** Completes the handshakes held while {@link holding}, and holds no more. */
  release() {
    this.holding = false;
    for (const establish of this.#held.splice(0)) establish();
  }

  get port() {
    return this.wss.address().port;
  }

  /** Sends `message` (an object, as JSON; a string, as it is) on the newest connection. */
  send(message) {
    this.sockets.at(-1).send(typeof message === "string" ? message : JSON.stringify(message));
  }

  /**
   * The next frame from pusher-js named `event` not taken yet (on `connection` and for
   * `channel`, top level or in its data, when given).
   */
  next(event, { connection, channel } = {}) {
    return this.received.until((items) => {
      const index = items.findIndex(
        (m, i) =>
          !this.#taken.has(i) &&
          m.event === event &&
          (connection === undefined || m.connection === connection) &&
          (channel === undefined || (m.channel ?? m.data?.channel) === channel),
      );
      if (index === -1) return undefined;
      this.#taken.add(index);
      return items[index];
    }, `${event}${channel ? ` for ${channel}` : ""}${connection ? ` on connection ${connection}` : ""}`);
  }

  /** Every frame from pusher-js named `event` so far. */
  all(event) {
    return this.received.items.filter((m) => m.event === event);
  }

  /** Waits for pusher-js's subscribe to `channel` on `connection` and answers it as subscribed after (epoch, offset). */
  async subscribed(channel, epoch, offset, connection) {
    await this.next("pusher:subscribe", { channel, connection });
    this.send(succeeded(channel, epoch, offset));
  }

  /** Closes the newest connection with 4200 (pusher-js reconnects at once); the next connection's number. */
  cut() {
    this.sockets.at(-1).close(4200, "reconnect now");
    return this.sockets.length + 1;
  }

  async close() {
    for (const socket of this.sockets) socket.terminate();
    await new Promise((resolve) => this.wss.close(resolve));
  }
}

const succeeded = (channel, epoch, offset) => ({
  event: "pusher_internal:subscription_succeeded",
  channel,
  data: "{}",
  wirehub: { epoch, offset },
});
const event = (channel, epoch, offset) => ({ event: "n", channel, data: JSON.stringify({ o: offset }), wirehub: { epoch, offset } });
const answer = (channel, name, data) => ({ event: name, channel, data: JSON.stringify(data) });
const recovered = (channel, epoch, offset, replayed, complete) => answer(channel, "wirehub:recovered", { epoch, offset, replayed, complete });
const recoveryFailed = (channel, data) => answer(channel, "wirehub:recovery_failed", data);

const cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A scripted server, a real pusher-js client of it with the connector, and what the app's
 * handlers got (`app`, per subscribed channel: `{ channel, event, data }`).
 */
async function setup(options = {}) {
  const server = await ScriptedServer.start();
  cleanups.push(() => server.close());
  const pusher = new Pusher("app-key", {
    cluster: "",
    wsHost: "127.0.0.1",
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
  });
  cleanups.push(() => pusher.disconnect());
  const app = new Collector();
  const done = new Collector();
  const failed = new Collector();
  const recovery = recover(pusher, { onRecovered: done.push, onRecoveryFailed: failed.push, ...options });
  cleanups.push(() => recovery.stop());
  const marks = new Collector();
  pusher.bind("test:mark", (data) => marks.push(data.id));
  let mark = 0;
  return {
    server,
    pusher,
    recovery,
    app,
    done,
    failed,
    subscribe(name) {
      const channel = pusher.subscribe(name);
      channel.bind_global((eventName, data) => app.push({ channel: name, event: eventName, data }));
      return channel;
    },
    /** The offsets of the events of `channel` the app got, in the order it got them. */
    offsets(channel) {
      return app.items.filter((e) => e.channel === channel && e.event === "n").map((e) => e.data.o);
    },
    /** Resolves when pusher-js has handled every frame the server sent so far. */
    async handled() {
      const id = ++mark;
      server.send({ event: "test:mark", data: JSON.stringify({ id }) });
      await marks.until((ids) => ids.includes(id), `marker ${id} to reach pusher-js`);
    },
    /** Resolves when the server has every frame pusher-js sent so far. */
    async sentAll() {
      const id = ++mark;
      assert.equal(pusher.send_event("test:mark", { id }), true);
      await server.received.until((items) => items.some((m) => m.event === "test:mark" && m.data.id === id), `marker ${id} from pusher-js`);
    },
  };
}


test("after a resubscription: the replay and the held live events reach the app in order, each once", async () => {
  const { server, pusher, app, done, subscribe, offsets, handled } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  assert.match(server.paths[0], /^\/app\/app-key\?protocol=7&/);
  for (const o of [1, 2, 3]) server.send(event("c", "E", o));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3]);
  assert.equal(pusher.connection.socket_id, "1.1");

  await server.subscribed("c", "E", 6, server.cut());
  const request = await server.next("wirehub:recover", { connection: 2 });
  assert.deepEqual(request.data, { channel: "c", epoch: "E", offset: 3, socket_ids: ["1.1"] });
  // Live events after the new subscription, then the replay (some of it twice), then the answer.
  for (const o of [8, 7, 4, 5, 6, 7]) server.send(event("c", "E", o));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3], "held until the answer");
  server.send(recovered("c", "E", 7, 4, true));
  server.send(event("c", "E", 9));
  server.send(event("c", "E", 8));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(done.items.length, 1);
  assert.equal(done.items[0].events, 5);
  assert.deepEqual(done.items[0].since, { epoch: "E", offset: 3 });
  assert.equal(done.items[0].rounds, 1);
  assert.ok(!app.items.some((e) => e.event.startsWith("wirehub:")), "the answers are the connector's");
  // pusher:subscription_succeeded reached the app at once, before the recovered events.
  const names = app.items.map((e) => (e.event === "n" ? e.data.o : e.event));
  assert.deepEqual(names, [
    "pusher:subscription_succeeded",
    1,
    2,
    3,
    "pusher:subscription_succeeded",
    4,
    5,
    6,
    7,
    8,
    9,
  ]);
  assert.equal(server.all("wirehub:recover").length, 1);
});

test("a replay in parts is asked for again from where it stopped", async () => {
  const { server, done, subscribe, offsets, handled } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 5, server.cut());
  assert.equal((await server.next("wirehub:recover")).data.offset, 1);
  server.send(event("c", "E", 6));
  server.send(event("c", "E", 2));
  server.send(event("c", "E", 3));
  server.send(recovered("c", "E", 3, 2, false));
  const again = await server.next("wirehub:recover");
  assert.deepEqual(again.data, { channel: "c", epoch: "E", offset: 3, socket_ids: ["1.1"] });
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3], "what the first part covered, not the live 6");
  for (const o of [4, 5, 6]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 6, 3, true));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3, 4, 5, 6]);
  assert.equal(done.items.length, 1);
  assert.equal(done.items[0].rounds, 2);
  assert.equal(done.items[0].events, 5);
});

test("a failed recovery is reported before the new subscription's events, which come once", async () => {
  const { server, failed, subscribe, offsets, handled } = await setup({
    onRecoveryFailed: (info) => failed.push({ ...info, handedOn: offsets("c").length }),
  });
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "F", 0, server.cut());
  await server.next("wirehub:recover");
  server.send(event("c", "F", 2));
  server.send(event("c", "F", 1));
  server.send(recoveryFailed("c", { reason: "epoch_changed", epoch: "F", offset: 0 }));
  const [info] = await failed.until((items) => items.length > 0 && items, "onRecoveryFailed");
  assert.equal(info.reason, "epoch_changed");
  assert.equal(info.channel, "c");
  assert.deepEqual(info.since, { epoch: "E", offset: 1 });
  assert.equal(info.handedOn, 1, "reported before the held events are handed on");
  await handled();
  assert.deepEqual(offsets("c"), [1, 1, 2]);
  server.send(event("c", "F", 2));
  await handled();
  assert.deepEqual(offsets("c"), [1, 1, 2], "offset 2 of epoch F once");
});

test("every failure reason reaches onRecoveryFailed, and the held events follow it", async () => {
  const { server, recovery, failed, subscribe, offsets, handled } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  const cases = [
    ...["out_of_history", "epoch_changed", "unavailable", "not_subscribed", "invalid_position"].map((reason) => ({
      reason,
      answer: (offset) => recoveryFailed("c", { reason, epoch: "E", offset: offset + 2 }),
    })),
    // A reason the connector does not know is handed on as it is; none at all is `unknown`.
    { reason: "some_new_reason", answer: () => recoveryFailed("c", { reason: "some_new_reason" }) },
    { reason: "unknown", answer: () => recoveryFailed("c", {}) },
    // A part that replays nothing: the connector stops asking.
    { reason: "no_progress", answer: (offset) => recovered("c", "E", offset, 0, false) },
  ];
  let last = 1;
  for (const [i, { reason, answer: failure }] of cases.entries()) {
    // Two events missed (last+1, last+2), one live after the resubscription (last+3).
    const connection = server.cut();
    await server.subscribed("c", "E", last + 2, connection);
    const request = await server.next("wirehub:recover", { connection });
    assert.equal(request.data.offset, last);
    server.send(event("c", "E", last + 3));
    server.send(failure(last));
    const info = await failed.until((items) => items[i], `onRecoveryFailed with ${reason}`);
    assert.deepEqual(info, { channel: "c", reason, since: { epoch: "E", offset: last } });
    await handled();
    assert.equal(offsets("c").at(-1), last + 3, `${reason}: the held live event is handed on`);
    assert.equal(recovery.recovering("c"), false);
    last += 3;
  }
  assert.deepEqual(
    offsets("c"),
    [1, ...cases.map((_, i) => 4 + 3 * i)],
    "the missed events are not made up; the live ones come once",
  );
  assert.equal(recovery.stats.failed, cases.length);
  assert.equal(recovery.stats.recovered, 0);
});

test("nothing published meanwhile: no request; a cache channel's replayed last event is not handed on twice", async () => {
  const { server, subscribe, offsets, handled, sentAll } = await setup();
  subscribe("cache-c");
  await server.subscribed("cache-c", "E", 3, 1);
  server.send(event("cache-c", "E", 4));
  await server.subscribed("cache-c", "E", 3, server.cut());
  server.send(event("cache-c", "E", 4));
  await handled();
  await sentAll();
  assert.deepEqual(server.all("wirehub:recover"), []);
  assert.deepEqual(offsets("cache-c"), [4]);
});

test("no answer within timeoutMs: reported as a timeout, held events handed on, a late answer ignored", async () => {
  const { server, recovery, failed, subscribe, offsets, handled } = await setup({ timeoutMs: 150 });
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 4, server.cut());
  await server.next("wirehub:recover");
  server.send(event("c", "E", 5));
  await handled();
  assert.deepEqual(offsets("c"), [1], "held");
  const [info] = await failed.until((items) => items.length > 0 && items, "the timeout");
  assert.equal(info.reason, "timeout");
  assert.deepEqual(info.since, { epoch: "E", offset: 1 });
  assert.deepEqual(offsets("c"), [1, 5]);
  // The replay and answer coming after all: nothing of it is handed on.
  for (const o of [2, 3, 4]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 4, 3, true));
  server.send(event("c", "E", 6));
  await handled();
  assert.deepEqual(offsets("c"), [1, 5, 6]);
  assert.deepEqual(recovery.stats, { recovered: 0, failed: 1, replayed: 0, duplicates: 3 });
});

test("more than maxHeld frames held while the answer is awaited: reported as overflow, the held ones handed on in order", async () => {
  const { server, recovery, failed, subscribe, offsets, handled } = await setup({ maxHeld: 4 });
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 3, server.cut());
  await server.next("wirehub:recover");
  // Live events after the new subscription, the answer slow to come: four are held.
  for (const o of [4, 5, 6, 7]) server.send(event("c", "E", o));
  await handled();
  assert.deepEqual(offsets("c"), [1], "held");
  assert.equal(recovery.recovering("c"), true);
  // The fifth is one too many.
  server.send(event("c", "E", 8));
  const [info] = await failed.until((items) => items.length > 0 && items, "the overflow");
  assert.deepEqual(info, { channel: "c", reason: "overflow", since: { epoch: "E", offset: 1 } });
  await handled();
  assert.deepEqual(offsets("c"), [1, 4, 5, 6, 7, 8]);
  assert.equal(recovery.recovering("c"), false);
  // The replay and its answer coming after all change nothing; live events flow.
  for (const o of [2, 3]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 3, 2, true));
  server.send(event("c", "E", 9));
  await handled();
  assert.deepEqual(offsets("c"), [1, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(recovery.stats, { recovered: 0, failed: 1, replayed: 0, duplicates: 2 });
});

test("a connection lost during a recovery: its held events are dropped, the next one starts from the last handed on", async () => {
  const { server, pusher, recovery, done, subscribe, offsets, handled } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 4, server.cut());
  await server.next("wirehub:recover", { connection: 2 });
  server.send(event("c", "E", 5));
  await handled();
  assert.equal(recovery.recovering("c"), true);

  const third = server.cut();
  const reconnected = new Promise((resolve) => pusher.connection.bind("connected", resolve));
  await within(reconnected, "pusher-js to reconnect");
  assert.equal(recovery.recovering("c"), false);
  await server.subscribed("c", "E", 6, third);
  const request = await server.next("wirehub:recover", { connection: third });
  assert.deepEqual(request.data, { channel: "c", epoch: "E", offset: 1, socket_ids: ["1.2", "1.1"] });
  for (const o of [2, 3, 4, 5, 6]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 6, 5, true));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3, 4, 5, 6]);
  assert.equal(done.items.length, 1);
  assert.deepEqual(recovery.socketIds, ["1.2", "1.1"]);
});

test("a recovery under way ends with its connection: no timeout while pusher-js reconnects, the next one starts from the last handed on", async () => {
  const timeoutMs = 100;
  const { server, pusher, recovery, done, failed, subscribe, offsets, handled } = await setup({ timeoutMs });
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 4, server.cut());
  await server.next("wirehub:recover", { connection: 2 });
  server.send(event("c", "E", 5));
  await handled();
  assert.equal(recovery.recovering("c"), true);

  // The next connection's handshake is held past the deadline of the recovery in flight.
  server.holding = true;
  const connecting = new Promise((resolve) => pusher.connection.bind("connecting", () => resolve(recovery.recovering("c"))));
  const third = server.cut();
  assert.equal(await within(connecting, "pusher-js to reconnect"), false, "ended when pusher-js left the connection");
  await server.accepted.until((numbers) => numbers.includes(third), "the third connection");
  // A timer of the same length set after the connector's fires after it.
  await new Promise((resolve) => setTimeout(resolve, timeoutMs));
  assert.deepEqual(failed.items, [], "no timeout reported for the connection that is gone");
  assert.deepEqual(offsets("c"), [1]);

  server.release();
  await server.subscribed("c", "E", 6, third);
  const request = await server.next("wirehub:recover", { connection: third });
  assert.deepEqual(request.data, { channel: "c", epoch: "E", offset: 1, socket_ids: ["1.2", "1.1"] });
  for (const o of [2, 3, 4, 5, 6]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 6, 5, true));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3, 4, 5, 6]);
  assert.equal(done.items.length, 1);
  assert.deepEqual(failed.items, []);
});

test("disconnect() during a recovery ends it; connect() again recovers from the last handed on", async () => {
  const { server, pusher, recovery, done, failed, subscribe, offsets, handled } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await server.subscribed("c", "E", 3, server.cut());
  await server.next("wirehub:recover", { connection: 2 });
  assert.equal(recovery.recovering("c"), true);
  pusher.disconnect();
  assert.equal(pusher.connection.state, "disconnected");
  assert.equal(recovery.recovering("c"), false, "no timer left for a connection that is gone");
  pusher.connect();
  await server.subscribed("c", "E", 4, 3);
  const request = await server.next("wirehub:recover", { connection: 3 });
  assert.deepEqual(request.data, { channel: "c", epoch: "E", offset: 1, socket_ids: ["1.2", "1.1"] });
  for (const o of [2, 3, 4]) server.send(event("c", "E", o));
  server.send(recovered("c", "E", 4, 3, true));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2, 3, 4]);
  assert.equal(done.items.length, 1);
  assert.deepEqual(failed.items, []);
});

test("the recover request names the socket ids of the last 8 earlier connections, newest first", async () => {
  const { server, recovery, subscribe, offsets, handled, sentAll } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await handled();
  for (let i = 0; i < 9; i++) await server.subscribed("c", "E", 1, server.cut());
  await sentAll();
  assert.deepEqual(server.all("wirehub:recover"), [], "nothing missed on connections 2 to 10");
  const connection = server.cut();
  await server.subscribed("c", "E", 2, connection);
  const request = await server.next("wirehub:recover", { connection });
  const expected = ["1.10", "1.9", "1.8", "1.7", "1.6", "1.5", "1.4", "1.3"];
  assert.deepEqual(request.data.socket_ids, expected);
  assert.deepEqual(recovery.socketIds, expected);
  server.send(event("c", "E", 2));
  server.send(recovered("c", "E", 2, 1, true));
  await handled();
  assert.deepEqual(offsets("c"), [1, 2]);
});

test("unsubscribe forgets the channel; unpositioned frames and other channels pass untouched; stop() removes the hooks", async () => {
  const { server, pusher, recovery, app, subscribe, offsets, handled, sentAll } = await setup({ channels: (name) => name !== "skip" });
  const errors = [];
  pusher.connection.bind("error", (error) => errors.push(error));
  subscribe("c");
  subscribe("skip");
  await server.subscribed("c", "E", 0, 1);
  await server.subscribed("skip", "E", 0, 1);
  server.send(event("c", "E", 1));
  await handled();
  pusher.unsubscribe("c");
  assert.equal((await server.next("pusher:unsubscribe")).data.channel, "c", "pusher-js's own unsubscribe ran");
  assert.equal(recovery.position("c"), undefined);

  // Subscribed again: the connector starts from the new subscription.
  subscribe("c");
  await server.subscribed("c", "E", 5, 1);
  await handled();
  await sentAll();
  assert.deepEqual(server.all("wirehub:recover"), []);
  assert.deepEqual(recovery.position("c"), { epoch: "E", offset: 5 });

  // During a recovery, an unpositioned frame (a client event) is not held.
  await server.subscribed("c", "E", 7, server.cut());
  await server.subscribed("skip", "E", 0, 2);
  await server.next("wirehub:recover");
  server.send(event("c", "E", 8));
  server.send({ event: "client-typing", channel: "c", data: JSON.stringify({ who: "u" }) });
  // A channel the connector leaves alone: both copies reach the app.
  server.send(event("skip", "E", 1));
  server.send(event("skip", "E", 1));
  // Not JSON: for pusher-js's own parser to report.
  server.send("not JSON");
  await handled();
  assert.deepEqual(
    app.items.filter((e) => e.channel === "c" && e.event === "client-typing").map((e) => e.data),
    [{ who: "u" }],
  );
  assert.deepEqual(offsets("skip"), [1, 1]);
  assert.deepEqual(
    errors.filter((e) => e.type === "MessageParseError").map((e) => e.data),
    ["not JSON"],
  );
  assert.equal(recovery.recovering("c"), true);

  // stop() hands on what it held and leaves pusher-js as it was.
  const transport = pusher.connection.connection.transport;
  const own = Object.getPrototypeOf(transport).emit;
  assert.notEqual(transport.emit, own, "hooked");
  recovery.stop();
  assert.equal(transport.emit, own, "pusher-js's own emit again");
  assert.ok(!Object.hasOwn(pusher, "unsubscribe"));
  server.send(event("c", "E", 8));
  server.send(event("c", "E", 6));
  await handled();
  assert.deepEqual(offsets("c"), [1, 8, 8, 6], "no longer held, ordered or deduplicated");
});

test("what a channel gets while the app is unsubscribed is not recovered: frames still on the way, a cancelled subscription", async () => {
  const { server, pusher, recovery, subscribe, offsets, handled, sentAll } = await setup();
  subscribe("c");
  await server.subscribed("c", "E", 0, 1);
  server.send(event("c", "E", 1));
  await handled();
  // Unsubscribed and subscribed again at once, while an event the server sent before it saw
  // the unsubscribe is still on its way: 3 to 5 are published meanwhile.
  pusher.unsubscribe("c");
  subscribe("c");
  await server.next("pusher:unsubscribe", { channel: "c" });
  await server.next("pusher:subscribe", { channel: "c" });
  server.send(event("c", "E", 2));
  server.send(succeeded("c", "E", 5));
  await handled();
  await sentAll();
  assert.deepEqual(server.all("wirehub:recover"), []);
  assert.deepEqual(recovery.position("c"), { epoch: "E", offset: 5 });
  // pusher-js hands the event on its way to the new subscription's handlers, as without the connector.
  assert.deepEqual(offsets("c"), [1, 2]);

  // A subscription cancelled while pending: pusher-js unsubscribes when it succeeds.
  subscribe("d");
  pusher.unsubscribe("d");
  await server.subscribed("d", "E", 3, 1);
  await server.next("pusher:unsubscribe", { channel: "d" });
  assert.equal(recovery.position("d"), undefined);
  subscribe("d");
  await server.subscribed("d", "E", 6, 1);
  await handled();
  await sentAll();
  assert.deepEqual(server.all("wirehub:recover"), [], "3 to 6 came while it was not subscribed");
  assert.deepEqual(recovery.position("d"), { epoch: "E", offset: 6 });
});

test("wirehub:gap starts a recovery; one during a recovery makes it ask again before handing on what follows the gap", async () => {
  const { server, app, done, subscribe, offsets, handled } = await setup();
  const gap = (from, to) =>
    answer("g", "wirehub:gap", { type: "gap", channel: "g", epoch: "E", offset: to, from, to });
  subscribe("g");
  await server.subscribed("g", "E", 0, 1);
  server.send(event("g", "E", 1));
  server.send(gap(2, 2));
  assert.deepEqual((await server.next("wirehub:recover")).data, { channel: "g", epoch: "E", offset: 1, socket_ids: [] });
  server.send(event("g", "E", 2));
  // Another gap while the recovery is under way: 3 and 4 are dropped, 5 comes live.
  server.send(gap(3, 4));
  server.send(event("g", "E", 5));
  server.send(recovered("g", "E", 2, 1, true));
  const again = await server.next("wirehub:recover");
  assert.equal(again.data.offset, 2);
  await handled();
  assert.deepEqual(offsets("g"), [1, 2], "5 is not handed on before 3 and 4");
  for (const o of [3, 4, 5]) server.send(event("g", "E", o));
  server.send(recovered("g", "E", 5, 3, true));
  await handled();
  assert.deepEqual(offsets("g"), [1, 2, 3, 4, 5]);
  assert.equal(done.items.length, 1);
  assert.equal(done.items[0].rounds, 2);
  assert.equal(done.items[0].events, 4);
  assert.equal(app.items.filter((e) => e.event === "wirehub:gap").length, 2, "the gap events reach the app too");
  assert.equal(server.all("wirehub:recover").length, 2);
});
