// Recovery for pusher-js clients with @wirehub/pusher-recovery, against the release binary:
// pusher-js (and Laravel Echo on it) connected through a TCP balancer that the tests cut
// (sockets destroyed, no close frame) while the `pusher` server SDK triggers a numbered
// sequence; the app's handlers must see every number exactly once, in order. Also: events the
// client's own earlier socket was excluded from (Echo's toOthers(), its whispers) are not
// replayed to it, a restart of one of two nodes on Redis, history too short or lost (the
// failure callback, nothing duplicated), a replay larger than the connection's queue, and
// pusher-js's browser build in headless Chromium (public and private-encrypted channels).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { recover } from "@wirehub/pusher-recovery";
import EchoModule from "laravel-echo";
import { chromium } from "playwright-core";

import { APP, Balancer, findChromium, Collector, Pusher, RedisServer, Server, next, startApp, subscribe, waitUntil, withTimeout } from "./helpers.js";

const Echo = EchoModule.default ?? EchoModule;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Triggers event `n` with data `{ n }` on `channels` (one request for all, or one each when
 * `separate`) every `intervalMs`, numbered from 1, until `stop()`, which resolves with the last number sent.
 */
function sequence(sdk, channels, { event = "n", intervalMs = 8, separate = false } = {}) {
  let n = 0;
  let stopped = false;
  let paused;
  const done = (async () => {
    while (!stopped) {
      if (paused !== undefined) await paused.promise;
      n += 1;
      // The server SDK encrypts for one channel a request.
      const requests = separate ? channels.map((c) => sdk.trigger(c, event, { n })) : [sdk.trigger(channels, event, { n })];
      for (const response of await Promise.all(requests)) assert.equal(response.status, 200);
      await sleep(intervalMs);
    }
    return n;
  })();
  return {
    get sent() {
      return n;
    },
    /** Stops after the trigger in flight: resolves when it was answered. */
    pause() {
      let resolve;
      const promise = new Promise((r) => (resolve = r));
      paused = { promise, resolve };
      // The trigger in flight is answered within one interval and a request.
      return sleep(intervalMs + 200);
    },
    resume() {
      paused?.resolve();
      paused = undefined;
    },
    async stop() {
      stopped = true;
      this.resume();
      return done;
    },
  };
}

/** Every number 1..`last` exactly once, in order. */
function assertEveryNumberOnce(seen, last, what) {
  const numbers = seen.map((d) => d.n);
  const wrong = numbers.findIndex((n, i) => n !== i + 1);
  assert.equal(wrong, -1, `${what}: at index ${wrong} got ${numbers[wrong]} (around ${numbers.slice(Math.max(0, wrong - 3), wrong + 3)})`);
  assert.equal(numbers.length, last, `${what}: ${numbers.length} of ${last}`);
}

/** A pusher-js client through `balancer` with the connector; `recovered`/`failed` collect. */
function recoveringClient(server, balancer, extra = {}) {
  const client = new Pusher(APP.key, server.clientOptions({ wsPort: balancer.port, ...extra }));
  const recovered = new Collector();
  const failed = new Collector();
  const recovery = recover(client, { onRecovered: recovered.push, onRecoveryFailed: failed.push });
  return { client, recovery, recovered, failed };
}

function connected(client, what = "pusher-js to connect") {
  if (client.connection.state === "connected") return Promise.resolve();
  return next(client.connection, "connected", what, 15_000);
}

/** Cuts the balancer's connections and waits for pusher-js to be connected again. */
async function cutAndReconnect(balancer, client) {
  const socketId = client.connection.socket_id;
  const reconnected = new Promise((resolve) => {
    const onConnected = () => {
      if (client.connection.socket_id === socketId) return;
      client.connection.unbind("connected", onConnected);
      resolve();
    };
    client.connection.bind("connected", onConnected);
  });
  const started = Date.now();
  balancer.cut();
  await withTimeout(reconnected, 15_000, "pusher-js to reconnect after the cut");
  return Date.now() - started;
}

function figures(t, recovered) {
  const events = recovered.map((r) => r.events);
  const ms = recovered.map((r) => r.ms);
  t.diagnostic(`recoveries ${recovered.length}: events ${events.join(", ")}; ms ${ms.join(", ")}; rounds ${recovered.map((r) => r.rounds).join(", ")}`);
}

describe("recovery with @wirehub/pusher-recovery, one node", () => {
  /** @type {Server} */
  let server;
  let balancer;
  let app;
  const clients = [];

  before(async () => {
    server = await Server.start(["--history-size", "2000"]);
    balancer = await Balancer.start(server.port);
    app = await startApp(server);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await app?.close();
    await balancer?.close();
    await server?.stop();
  });

  test("pusher-js, three cuts while numbers are triggered: every number once, in order, on public, private, presence and cache channels", async (t) => {
    const { client, recovery, recovered, failed } = recoveringClient(server, balancer, {
      channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax", params: { user_id: "numbers-fan" } },
    });
    clients.push(client);
    await connected(client);
    const names = ["rec-numbers", "private-rec-numbers", "presence-rec-numbers", "cache-rec-numbers"];
    const seen = Object.fromEntries(names.map((name) => [name, new Collector()]));
    for (const name of names) {
      const { channel } = await subscribe(client, name);
      channel.bind("n", seen[name].push);
    }
    const numbers = sequence(server.sdk(), names);
    const outages = [];
    for (let cut = 0; cut < 3; cut++) {
      await seen["rec-numbers"].waitFor(Math.max(1, numbers.sent - 1), "numbers before the cut", 10_000);
      outages.push(await cutAndReconnect(balancer, client));
      const want = names.length * (cut + 1);
      await waitUntil(() => recovered.items.length >= want || failed.items.length > 0, `the recoveries after cut ${cut + 1}`, 10_000);
    }
    const last = await numbers.stop();
    for (const name of names) await seen[name].waitFor(last, `every number on ${name}`, 10_000);
    assert.deepEqual(failed.items, []);
    for (const name of names) assertEveryNumberOnce(seen[name].items, last, name);
    assert.equal(recovered.items.length, 3 * names.length);
    // Each cut lost events that the recovery brought back (the outage spans many triggers).
    assert.ok(recovered.items.every((r) => r.events > 0), JSON.stringify(recovered.items));
    assert.equal(recovery.socketIds.length, 3);
    t.diagnostic(`${last} numbers per channel; outages ${outages.join(", ")} ms; duplicates dropped ${recovery.stats.duplicates}`);
    figures(t, recovered.items);
  });

  test("Laravel Echo on the recovering pusher-js: listen() and a private channel get every number once; toOthers() and whispers of the client's earlier socket are not replayed to it", async (t) => {
    const pusher = new Pusher(APP.key, server.clientOptions({
      wsPort: balancer.port,
      channelAuthorization: { endpoint: `${app.url}/broadcasting/auth`, transport: "ajax" },
    }));
    const recovered = new Collector();
    const failed = new Collector();
    const recovery = recover(pusher, { onRecovered: recovered.push, onRecoveryFailed: failed.push });
    const echo = new Echo({ broadcaster: "pusher", client: pusher });
    clients.push(pusher);
    await connected(pusher);
    const seenOrders = new Collector();
    const seenPrivate = new Collector();
    const mine = new Collector();
    const whispers = new Collector();
    const orders = echo.channel("echo-rec-orders").listen("Numbered", seenOrders.push);
    const room = echo
      .private("echo-rec-room")
      .listen("Numbered", seenPrivate.push)
      .listen("Mine", mine.push)
      .listenForWhisper("typing", whispers.push);
    await withTimeout(new Promise((resolve) => orders.subscribed(resolve)), 5_000, "Echo's public channel");
    await withTimeout(new Promise((resolve) => room.subscribed(resolve)), 5_000, "Echo's private channel");

    // A peer on the private channel (plain pusher-js), which whispers and sees all.
    const peer = new Pusher(APP.key, server.clientOptions({
      channelAuthorization: { endpoint: `${app.url}/broadcasting/auth`, transport: "ajax" },
    }));
    clients.push(peer);
    await connected(peer);
    const { channel: peerRoom } = await subscribe(peer, "private-echo-rec-room");
    const peerSaw = new Collector();
    peerRoom.bind("App\\Events\\Mine", peerSaw.push);
    peerRoom.bind("client-typing", peerSaw.push);

    const broadcast = async (channel, event, data, socketId) => {
      const response = await fetch(`${app.url}/broadcast`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(socketId ? { "X-Socket-ID": socketId } : {}) },
        body: JSON.stringify({ channel, event, data }),
      });
      assert.equal(response.status, 200, await response.text());
    };
    const numbers = sequence(server.sdk(), ["echo-rec-orders", "private-echo-rec-room"], { event: "App\\Events\\Numbered" });
    let peerWhispers = 0;
    for (let cut = 0; cut < 2; cut++) {
      await sleep(300);
      // Quiet: the app has every number so far; then events its own socket must not get,
      // published after its position, and the cut before anything else reaches it.
      await numbers.pause();
      await seenPrivate.waitFor(numbers.sent, "the numbers so far", 10_000);
      await seenOrders.waitFor(numbers.sent, "the numbers so far", 10_000);
      const before = peerSaw.items.length;
      await broadcast("private-echo-rec-room", "App\\Events\\Mine", { cut }, echo.socketId());
      room.whisper("typing", { from: "me", cut });
      await peerSaw.waitFor(before + 2, "the peer to see the toOthers event and the whisper");
      const outage = cutAndReconnect(balancer, pusher);
      numbers.resume();
      // While the client is away, the peer whispers: the client must get it once.
      await sleep(50);
      peerRoom.trigger("client-typing", { from: "peer", cut });
      peerWhispers += 1;
      await outage;
      await waitUntil(() => recovered.items.length + failed.items.length >= 2 * (cut + 1), `the recoveries after cut ${cut + 1}`, 10_000);
    }
    const last = await numbers.stop();
    await seenOrders.waitFor(last, "every number through listen()", 10_000);
    await seenPrivate.waitFor(last, "every number on the private channel", 10_000);
    await whispers.waitFor(peerWhispers, "the peer's whispers");
    // A marker after everything: nothing more is on its way.
    const marker = new Collector();
    room.listen("Marker", marker.push);
    await broadcast("private-echo-rec-room", "App\\Events\\Marker", {});
    await marker.waitFor(1, "the marker");
    assert.deepEqual(failed.items, []);
    assertEveryNumberOnce(seenOrders.items, last, "Echo listen()");
    assertEveryNumberOnce(seenPrivate.items, last, "Echo private()");
    assert.deepEqual(mine.items, [], "toOthers() events of the client's own sockets");
    assert.deepEqual(whispers.items, [{ from: "peer", cut: 0 }, { from: "peer", cut: 1 }]);
    t.diagnostic(`${last} numbers per channel; duplicates dropped ${recovery.stats.duplicates}`);
    figures(t, recovered.items);
  });

  test("a plain pusher-js next to a recovering one gets no position events and no replays", async () => {
    const plain = new Pusher(APP.key, server.clientOptions({ wsPort: balancer.port }));
    clients.push(plain);
    await connected(plain);
    const got = [];
    plain.bind_global((event, data) => got.push(event));
    const { channel } = await subscribe(plain, "rec-plain");
    const seen = new Collector();
    channel.bind("n", seen.push);
    const sdk = server.sdk();
    await sdk.trigger("rec-plain", "n", { n: 1 });
    await seen.waitFor(1);
    await cutAndReconnect(balancer, plain);
    await next(channel, "pusher:subscription_succeeded", "the resubscription");
    await sdk.trigger("rec-plain", "n", { n: 2 });
    await seen.waitFor(2);
    assert.deepEqual(seen.items, [{ n: 1 }, { n: 2 }]);
    assert.ok(!got.some((event) => event.startsWith("wirehub:")), JSON.stringify(got));
  });
});

describe("recovery when history cannot cover it", () => {
  /** @type {Server} */
  let server;
  let balancer;
  const clients = [];

  before(async () => {
    server = await Server.start(["--history-size", "5"]);
    balancer = await Balancer.start(server.port);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await balancer?.close();
    await server?.stop();
  });

  /** Keeps the client away (its reconnect waits at the balancer) while `during` runs. */
  async function away(client, during) {
    const socketId = client.connection.socket_id;
    balancer.hold();
    balancer.cut();
    await waitUntil(() => client.connection.state !== "connected", "pusher-js to notice the cut", 5_000);
    await during();
    balancer.release();
    await waitUntil(() => client.connection.state === "connected" && client.connection.socket_id !== socketId, "pusher-js to reconnect", 15_000);
  }

  test("50 missed with a history of 5: onRecoveryFailed says out_of_history, later events come once, nothing twice", async () => {
    const { client, recovered, failed } = recoveringClient(server, balancer);
    clients.push(client);
    await connected(client);
    const { channel } = await subscribe(client, "short-numbers");
    const seen = new Collector();
    channel.bind("n", seen.push);
    const sdk = server.sdk();
    for (let n = 1; n <= 3; n++) await sdk.trigger("short-numbers", "n", { n });
    await seen.waitFor(3);
    await away(client, async () => {
      for (let n = 4; n <= 53; n++) await sdk.trigger("short-numbers", "n", { n });
    });
    const [failure] = await failed.waitFor(1, "onRecoveryFailed", 10_000);
    assert.equal(failure.channel, "short-numbers");
    assert.equal(failure.reason, "out_of_history");
    assert.equal(failure.since.offset, 3);
    for (let n = 54; n <= 56; n++) await sdk.trigger("short-numbers", "n", { n });
    await seen.waitFor(6, "the numbers after the reconnect");
    assert.deepEqual(seen.items.map((d) => d.n), [1, 2, 3, 54, 55, 56]);
    assert.deepEqual(recovered.items, []);
  });

  test("an in-memory server restarted (its history lost): onRecoveryFailed says epoch_changed; the new stream's events come once", async () => {
    const { client, failed } = recoveringClient(server, balancer);
    clients.push(client);
    await connected(client);
    const { channel } = await subscribe(client, "restart-numbers");
    const seen = new Collector();
    channel.bind("n", seen.push);
    for (let n = 1; n <= 3; n++) await server.sdk().trigger("restart-numbers", "n", { n });
    await seen.waitFor(3);
    await away(client, async () => {
      await server.stop();
      server = await server.restart();
    });
    const [failure] = await failed.waitFor(1, "onRecoveryFailed", 10_000);
    assert.equal(failure.reason, "epoch_changed");
    for (let n = 4; n <= 6; n++) await server.sdk().trigger("restart-numbers", "n", { n });
    await seen.waitFor(6, "the numbers after the restart");
    assert.deepEqual(seen.items.map((d) => d.n), [1, 2, 3, 4, 5, 6]);
  });
});

describe("a replay larger than the connection's queue", () => {
  /** @type {Server} */
  let server;
  let balancer;
  const clients = [];

  before(async () => {
    server = await Server.start(["--history-size", "1000", "--max-queued-frames", "16"]);
    balancer = await Balancer.start(server.port);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await balancer?.close();
    await server?.stop();
  });

  test("300 missed through a queue of 16 frames: recovered in parts, every number once", async (t) => {
    const { client, recovered, failed } = recoveringClient(server, balancer);
    clients.push(client);
    await connected(client);
    const { channel } = await subscribe(client, "big-numbers");
    const seen = new Collector();
    channel.bind("n", seen.push);
    const sdk = server.sdk();
    await sdk.trigger("big-numbers", "n", { n: 1 });
    await seen.waitFor(1);
    const socketId = client.connection.socket_id;
    balancer.hold();
    balancer.cut();
    await waitUntil(() => client.connection.state !== "connected", "pusher-js to notice the cut");
    for (let n = 2; n <= 301; n += 10) {
      await sdk.triggerBatch(Array.from({ length: 10 }, (_, i) => ({ channel: "big-numbers", name: "n", data: { n: n + i } })));
    }
    balancer.release();
    await waitUntil(() => client.connection.socket_id !== socketId && client.connection.state === "connected", "pusher-js to reconnect", 15_000);
    const [done] = await recovered.waitFor(1, "the recovery", 10_000);
    await seen.waitFor(301);
    assert.deepEqual(failed.items, []);
    assertEveryNumberOnce(seen.items, 301, "big");
    assert.ok(done.rounds > 1, `${done.rounds} rounds`);
    assert.equal(done.events, 300);
    figures(t, recovered.items);
  });
});

describe("a cut in the middle of a recovery", () => {
  /** @type {Server} */
  let server;
  let balancer;
  const clients = [];

  before(async () => {
    server = await Server.start(["--history-size", "1000", "--max-queued-frames", "8"]);
    balancer = await Balancer.start(server.port);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await balancer?.close();
    await server?.stop();
  });

  test("the connection lost while a replay in parts is under way: the next recovery starts from the last number handed on; every number once", async (t) => {
    const { client, recovery, recovered, failed } = recoveringClient(server, balancer);
    clients.push(client);
    await connected(client);
    const { channel } = await subscribe(client, "cut-numbers");
    const seen = new Collector();
    channel.bind("n", seen.push);
    const sdk = server.sdk();
    const publish = async (from, to) => {
      for (let n = from; n <= to; n += 10) {
        const batch = Array.from({ length: Math.min(10, to - n + 1) }, (_, i) => ({ channel: "cut-numbers", name: "n", data: { n: n + i } }));
        await sdk.triggerBatch(batch);
      }
    };
    await publish(1, 1);
    await seen.waitFor(1);
    balancer.hold();
    balancer.cut();
    await waitUntil(() => client.connection.state !== "connected", "pusher-js to notice the cut");
    await publish(2, 601);
    balancer.release();
    // Cut again as soon as the recovery is under way and part of it was handed on.
    await waitUntil(() => recovery.recovering("cut-numbers") && seen.items.length > 150, "the recovery to be under way", 15_000, 1);
    const handedOn = seen.items.length;
    balancer.cut();
    await recovered.waitFor(1, "the second recovery", 15_000);
    await seen.waitFor(601, "every number", 10_000);
    assert.deepEqual(failed.items, []);
    assertEveryNumberOnce(seen.items, 601, "cut during recovery");
    assert.ok(handedOn < 601, `${handedOn} handed on when the link was cut`);
    t.diagnostic(`${handedOn - 1} of 600 handed on before the second cut`);
    figures(t, recovered.items);
  });
});

describe("recovery across two nodes on Redis", () => {
  let redis;
  /** @type {Server} */
  let nodeA;
  /** @type {Server} */
  let nodeB;
  let balancer;
  const clients = [];

  before(async () => {
    redis = await RedisServer.start();
    const args = ["--broker", redis.url, "--redis-prefix", `pusher-recovery-${process.pid}:`, "--history-size", "2000"];
    [nodeA, nodeB] = await Promise.all([Server.start(args), Server.start(args)]);
    balancer = await Balancer.start(nodeA.port);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await balancer?.close();
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test("node A killed while node B triggers numbers; pusher-js reconnects to B and recovers: every number once, in order", async (t) => {
    const { client, recovered, failed } = recoveringClient(nodeA, balancer);
    clients.push(client);
    await connected(client);
    const { channel } = await subscribe(client, "cluster-rec-numbers");
    const seen = new Collector();
    channel.bind("n", seen.push);
    const numbers = sequence(nodeB.sdk(), "cluster-rec-numbers");
    await seen.waitFor(20, "numbers through node A", 10_000);
    const socketId = client.connection.socket_id;
    const started = Date.now();
    balancer.retarget(nodeB.port);
    await nodeA.stop();
    await waitUntil(() => client.connection.socket_id !== socketId && client.connection.state === "connected", "pusher-js to reconnect to node B", 30_000);
    const outage = Date.now() - started;
    await recovered.waitFor(1, "the recovery on node B", 10_000);
    await sleep(300);
    const last = await numbers.stop();
    await seen.waitFor(last, "every number", 10_000);
    assert.deepEqual(failed.items, []);
    assertEveryNumberOnce(seen.items, last, "across nodes");
    assert.ok(recovered.items[0].events > 0);
    t.diagnostic(`${last} numbers; outage ${outage} ms`);
    figures(t, recovered.items);
  });
});

const executablePath = findChromium();

describe("recovery in headless Chromium", { skip: executablePath === undefined ? "no Chromium found" : false }, () => {
  /** @type {Server} */
  let server;
  let balancer;
  let app;
  let pages;
  let browser;

  /** A page with pusher-js's browser build (with end-to-end encryption) and the connector as an ES module. */
  async function startPages() {
    const require = createRequire(import.meta.url);
    const files = {
      "/pusher.js": require.resolve("pusher-js/dist/web/pusher-with-encryption.min.js"),
      "/pusher-recovery.js": fileURLToPath(import.meta.resolve("@wirehub/pusher-recovery")),
    };
    const html =
      '<!doctype html><title>recovery</title><script src="/pusher.js"></script>' +
      '<script type="module">import { recover } from "/pusher-recovery.js"; window.recover = recover;</script>';
    const pageServer = http.createServer((request, response) => {
      const url = request.url ?? "/";
      if (url === "/") return response.writeHead(200, { "content-type": "text/html" }).end(html);
      if (!(url in files)) return response.writeHead(404).end();
      readFile(files[url]).then(
        (body) => response.writeHead(200, { "content-type": "text/javascript" }).end(body),
        () => response.writeHead(500).end(),
      );
    });
    await new Promise((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
    return {
      url: `http://127.0.0.1:${pageServer.address().port}/`,
      async close() {
        const closed = new Promise((resolve) => pageServer.close(resolve));
        pageServer.closeAllConnections();
        await closed;
      },
    };
  }

  before(async () => {
    server = await Server.start(["--history-size", "2000"]);
    balancer = await Balancer.start(server.port);
    app = await startApp(server);
    pages = await startPages();
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update"],
    });
  });

  after(async () => {
    await browser?.close();
    await pages?.close();
    await app?.close();
    await balancer?.close();
    await server?.stop();
  });

  test("pusher-js in the browser with the connector, one cut: every number once, in order, on a public and a private-encrypted channel", async (t) => {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(error));
    await page.goto(pages.url);
    await page.waitForFunction(() => typeof window.recover === "function" && typeof window.Pusher === "function", null, { timeout: 5_000 });
    await page.evaluate(
      ({ key, options, names }) =>
        new Promise((resolve, reject) => {
          const pusher = new window.Pusher(key, options);
          window.pusher = pusher;
          window.seen = Object.fromEntries(names.map((name) => [name, []]));
          window.recoveries = [];
          window.failures = [];
          window.recover(pusher, { onRecovered: (i) => window.recoveries.push(i), onRecoveryFailed: (i) => window.failures.push(i) });
          let pending = names.length;
          for (const name of names) {
            const channel = pusher.subscribe(name);
            channel.bind("n", (data) => window.seen[name].push(data.n));
            channel.bind("pusher:subscription_succeeded", () => --pending === 0 && resolve());
            channel.bind("pusher:subscription_error", (error) => reject(new Error(JSON.stringify(error))));
          }
          setTimeout(() => reject(new Error("not subscribed")), 5_000);
        }),
      {
        key: APP.key,
        names: ["browser-rec", "private-encrypted-browser-rec"],
        options: server.clientOptions({
          wsPort: balancer.port,
          channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax" },
        }),
      },
    );
    const numbers = sequence(server.sdk(), ["browser-rec", "private-encrypted-browser-rec"], { separate: true });
    await page.waitForFunction(() => window.seen["browser-rec"].length >= 20, null, { timeout: 10_000 });
    const socketId = await page.evaluate(() => window.pusher.connection.socket_id);
    balancer.cut();
    await page.waitForFunction((id) => window.pusher.connection.state === "connected" && window.pusher.connection.socket_id !== id, socketId, { timeout: 15_000 });
    await page.waitForFunction(() => window.recoveries.length + window.failures.length >= 2, null, { timeout: 10_000 });
    await sleep(300);
    const last = await numbers.stop();
    await page.waitForFunction(
      (n) => Object.values(window.seen).every((seen) => seen.length >= n),
      last,
      { timeout: 10_000 },
    );
    const { seen, recoveries, failures } = await page.evaluate(() => ({ seen: window.seen, recoveries: window.recoveries, failures: window.failures }));
    assert.deepEqual(failures, []);
    assert.deepEqual(errors, []);
    for (const [name, numbersSeen] of Object.entries(seen)) {
      assertEveryNumberOnce(numbersSeen.map((n) => ({ n })), last, name);
    }
    assert.ok(recoveries.every((r) => r.events > 0), JSON.stringify(recoveries));
    t.diagnostic(`${last} numbers per channel`);
    figures(t, recoveries);
    await page.close();
  });
});
