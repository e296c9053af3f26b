// The client with the platform's own WebSocket and no `WebSocket` option, as in a browser.
// Node 20 has one behind --experimental-websocket (the test script passes it); like a browser's,
// it hides WebSocket pings and shows a refused upgrade only as a close (1006) before open.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { type ClientOptions, type Message, WirehubClient } from "../src/index.js";
import { Collector, Server, TcpProxy, nextEvent, withTimeout } from "./helpers/server.js";

const hasGlobalWebSocket = typeof (globalThis as { WebSocket?: unknown }).WebSocket === "function";
const servers: Server[] = [];
const proxies: TcpProxy[] = [];
const clients: WirehubClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
  await Promise.all(servers.splice(0).map((server) => server.stop("SIGKILL")));
});

function makeClient(url: string, options: ClientOptions = {}): WirehubClient {
  // No WebSocket option: the global one is used.
  const client = new WirehubClient(url, { backoff: { initial: 50, max: 500 }, requestTimeout: 5000, ...options });
  clients.push(client);
  return client;
}

describe("with the global WebSocket (browser-like)", { skip: hasGlobalWebSocket ? false : "no global WebSocket" }, () => {
  test("round trip without passing a WebSocket implementation", async () => {
    const server = await Server.start();
    servers.push(server);
    const client = makeClient(server.url);
    await withTimeout(client.connect(), 5000, "the connection");
    const got = new Collector<Message>();
    await client.subscribe("chat", got.push);
    assert.equal(await client.publish("chat", { n: 1 }), 1);
    const [message] = await got.waitFor(1);
    assert.deepEqual(message, { type: "message", channel: "chat", data: { n: 1 }, offset: 1 });
  });

  test("a dead server is detected by the app-level ping alone (pings are invisible here)", async () => {
    const server = await Server.start();
    servers.push(server);
    const proxy = await TcpProxy.start(server.port);
    proxies.push(proxy);
    const client = makeClient(proxy.url, { idleTimeout: 300, pongTimeout: 300 });
    await withTimeout(client.connect(), 5000, "the connection");
    const dead = nextEvent(client, "disconnected", (event) => /presumed dead/.test(event.reason), 5000);
    proxy.freeze();
    await dead;
    const reconnected = nextEvent(client, "connected");
    proxy.restore();
    await reconnected;
  });

  test("a refused upgrade looks like a failed connect: the client backs off instead of stopping", async () => {
    const server = await Server.start(["--jwt-secret", "integration-secret-0123456789"]);
    servers.push(server);
    const client = makeClient(server.url, { token: "bad", maxReconnects: 1 });
    const retries: number[] = [];
    client.on("reconnecting", ({ delay }) => retries.push(delay));
    await assert.rejects(withTimeout(client.connect(), 5000, "the stop"), { code: "connect_failed" });
    // One retry, with the back-off step (k ≥ 1: random(0, 100 ms)).
    assert.equal(retries.length, 1);
    assert.ok(retries[0]! < 100);
  });
});
