// The server's retry hints under Node with `ws`: a scripted HTTP/WebSocket server that refuses
// with 503 and Retry-After, then closes with hints in the close reason; then the real server
// binary's admission control (connection rate, per-address cap, browsers' 4103) and drain.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { afterEach, describe, test } from "node:test";

import WebSocket, { WebSocketServer } from "ws";

import { type ClientEvents, type ClientOptions, WirehubClient } from "../src/index.js";
import { Collector, Server, nextEvent, withTimeout } from "./helpers/server.js";

const servers: Server[] = [];
const clients: WirehubClient[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(servers.splice(0).map((server) => server.stop("SIGKILL")));
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

/** A client whose own backoff (20 ms) is far shorter than any wait the server asks for. */
function makeClient(url: string, options: ClientOptions = {}): WirehubClient {
  const client = new WirehubClient(url, {
    WebSocket,
    backoff: { initial: 20, max: 20 },
    requestTimeout: 5000,
    connectTimeout: 5000,
    ...options,
  });
  clients.push(client);
  return client;
}

function record<K extends keyof ClientEvents>(client: WirehubClient, event: K): Collector<ClientEvents[K] & { at: number }> {
  const seen = new Collector<ClientEvents[K] & { at: number }>();
  client.on(event, (payload) => seen.push({ ...(payload as object), at: performance.now() } as ClientEvents[K] & { at: number }));
  return seen;
}

/** One step of the scripted server: what it does with the n-th upgrade request. */
type Step = (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

/** A plain Node HTTP server on 127.0.0.1:0 that answers each upgrade with the next step. */
async function scriptedServer(steps: Step[]): Promise<{ url: string; arrivals: number[] }> {
  const server = http.createServer();
  const arrivals: number[] = [];
  server.on("upgrade", (request, socket, head) => {
    arrivals.push(performance.now());
    const step = steps[arrivals.length - 1];
    if (step === undefined) {
      socket.destroy();
      return;
    }
    step(request, socket, head);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `ws://127.0.0.1:${port}/ws`, arrivals };
}

/** Answers the upgrade as the server's admission control does: status, Retry-After, JSON. */
function refuse(status: number, retryAfter: number): Step {
  return (_request, socket) => {
    const body = JSON.stringify({
      error: { code: "overloaded", reason: "connect_rate", message: "retry later", retry_after: retryAfter },
    });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nRetry-After: ${retryAfter}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  };
}

/** Completes the upgrade; `then` gets the socket. */
function accept(then: (ws: WebSocket) => void): Step {
  const wss = new WebSocketServer({ noServer: true });
  return (request, socket, head) => wss.handleUpgrade(request, socket, head, then);
}

const welcome = (ws: WebSocket): void => ws.send(JSON.stringify({ type: "welcome", version: 1, session: "s", heartbeat: 30 }));

describe("retry hints against a scripted server", () => {
  test("503 with Retry-After, then close 4103 and 1001 with hints: each wait is the server's, not the 20 ms backoff", async () => {
    const closes: number[] = [];
    const { url, arrivals } = await scriptedServer([
      refuse(503, 1),
      accept((ws) => {
        closes.push(performance.now());
        ws.close(4103, "overloaded; retry=300-500");
      }),
      accept((ws) => {
        welcome(ws);
        setTimeout(() => {
          closes.push(performance.now());
          ws.close(1001, "server shutting down; retry=200-400");
        }, 50);
      }),
      accept(welcome),
    ]);
    const client = makeClient(url);
    const reconnecting = record(client, "reconnecting");
    const errors = record(client, "error");
    await withTimeout(client.connect(), 10_000, "the first welcome");
    const connected = nextEvent(client, "connected");
    await withTimeout(connected, 10_000, "the welcome after the drain");
    assert.equal(arrivals.length, 4);

    const [refused, overloaded, drained] = reconnecting.items;
    assert.equal(errors.items[0]?.code, "overloaded");
    assert.equal(errors.items[0]?.status, 503);
    assert.equal(errors.items[0]?.retryAfter, 1000);
    assert.deepEqual(refused?.reason, { kind: "retryAfter", retryAfter: 1000 });
    assert.ok(refused!.delay >= 1000 && refused!.delay < 2000, `delay ${refused?.delay}`);
    assert.deepEqual(overloaded?.reason, { kind: "retryHint", min: 300, max: 500 });
    assert.ok(overloaded!.delay >= 300 && overloaded!.delay <= 500, `delay ${overloaded?.delay}`);
    assert.deepEqual(drained?.reason, { kind: "retryHint", min: 200, max: 400 });

    // What the server saw: nobody came back before the time it named.
    const gaps = [arrivals[1]! - arrivals[0]!, arrivals[2]! - closes[0]!, arrivals[3]! - closes[1]!];
    assert.ok(gaps[0]! >= 1000 && gaps[0]! < 2500, `after the 503: ${gaps[0]} ms`);
    assert.ok(gaps[1]! >= 300 && gaps[1]! < 1000, `after 4103: ${gaps[1]} ms`);
    assert.ok(gaps[2]! >= 200 && gaps[2]! < 900, `after 1001: ${gaps[2]} ms`);
  });

  test("429 with Retry-After is waited too", async () => {
    const { url, arrivals } = await scriptedServer([refuse(429, 1), accept(welcome)]);
    const client = makeClient(url);
    const reconnecting = nextEvent(client, "reconnecting");
    await withTimeout(client.connect(), 10_000, "the welcome");
    assert.deepEqual((await reconnecting).reason, { kind: "retryAfter", retryAfter: 1000 });
    assert.ok(arrivals[1]! - arrivals[0]! >= 1000, `${arrivals[1]! - arrivals[0]!} ms`);
  });
});

/** `/metrics`: the value of `name` with `labels` (e.g. `reason="per_ip"`), 0 when absent. */
async function labelled(server: Server, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

describe("retry hints from the real server", () => {
  test("the connection rate's 503: Retry-After waited, then connected; counted in /metrics", async () => {
    const server = await Server.start(["--connect-rate", "2", "--connect-burst", "1"]);
    servers.push(server);
    const first = makeClient(server.url);
    await withTimeout(first.connect(), 5000, "the first client");
    const second = makeClient(server.url);
    const errors = record(second, "error");
    const reconnecting = record(second, "reconnecting");
    await withTimeout(second.connect(), 10_000, "the refused client, later");
    const refusal = errors.items[0];
    assert.equal(refusal?.code, "overloaded");
    assert.equal(refusal?.status, 503);
    const wait = reconnecting.items[0];
    assert.equal(wait?.reason.kind, "retryAfter");
    assert.ok(wait!.reason.kind === "retryAfter" && wait!.reason.retryAfter >= 1000, JSON.stringify(wait));
    assert.ok(wait!.delay >= wait!.reason.retryAfter, JSON.stringify(wait));
    assert.ok(performance.now() - refusal!.at >= wait!.reason.retryAfter, "connected only after Retry-After");
    assert.ok((await labelled(server, "wirehub_admission_refused_total", 'reason="connect_rate"')) >= 1);
  });

  test("the per-address cap's 429, and a browser-style upgrade (Origin) closed with 4103 and a hint", async () => {
    const server = await Server.start(["--max-connections-per-ip", "1", "--overload-retry-after", "1s"]);
    servers.push(server);
    const holder = makeClient(server.url);
    await withTimeout(holder.connect(), 5000, "the first client");

    // Node: the refused upgrade's status and Retry-After.
    const node = makeClient(server.url);
    const nodeWait = nextEvent(node, "reconnecting");
    const nodeError = nextEvent(node, "error");
    void node.connect();
    assert.equal((await nodeError).status, 429);
    const { reason: nodeReason, delay: nodeDelay } = await nodeWait;
    assert.equal(nodeReason.kind, "retryAfter");
    assert.ok(nodeReason.kind === "retryAfter" && nodeReason.retryAfter >= 1000 && nodeDelay >= nodeReason.retryAfter);
    await node.close();

    // A request with an Origin, as a browser's: the upgrade completes and closes with 4103.
    const origin = `http://127.0.0.1:${server.port}`;
    class BrowserLike extends WebSocket {
      constructor(url: string) {
        super(url, { origin });
      }
    }
    const browser = makeClient(server.url, { WebSocket: BrowserLike });
    const disconnected = nextEvent(browser, "disconnected");
    const browserWait = nextEvent(browser, "reconnecting");
    void browser.connect();
    const closed = await disconnected;
    assert.equal(closed.code, 4103);
    assert.match(closed.reason, /^overloaded; retry=\d+-\d+$/);
    const { reason, delay } = await browserWait;
    assert.equal(reason.kind, "retryHint");
    assert.ok(reason.kind === "retryHint" && reason.min >= 1000 && reason.max === reason.min + 1000, JSON.stringify(reason));
    assert.ok(delay >= reason.min && delay <= reason.max);

    // Once the first client leaves, the refused one gets in after its wait.
    const connected = nextEvent(browser, "connected", () => true, 10_000);
    await holder.close();
    await connected;
    assert.ok((await labelled(server, "wirehub_admission_refused_total", 'reason="per_ip"')) >= 2);
  });

  test("a drain (SIGTERM) closes with 1001 and a hint; the client comes back inside the window", async () => {
    const server = await Server.start(["--shutdown-drain", "0s", "--drain-retry", "2s"]);
    servers.push(server);
    const client = makeClient(server.url);
    await withTimeout(client.connect(), 5000, "the client");
    const disconnected = record(client, "disconnected");
    const reconnecting = record(client, "reconnecting");
    const connecting = record(client, "connecting");
    await server.stop("SIGTERM");
    const [closed] = await disconnected.waitFor(1);
    assert.equal(closed?.code, 1001);
    assert.match(closed!.reason, /^server shutting down; retry=\d+-\d+$/);
    const { reason, delay } = (await reconnecting.waitFor(1))[0]!;
    assert.equal(reason.kind, "retryHint");
    assert.ok(reason.kind === "retryHint" && reason.min < 1000 && reason.max - reason.min === 1000, JSON.stringify(reason));
    assert.ok(delay >= reason.min && delay <= reason.max);
    const connected = nextEvent(client, "connected");
    servers.push(await server.restart());
    await connected;
    const [again] = await connecting.waitFor(1);
    assert.ok(again!.at - closed!.at >= reason.min - 5, `came back ${again!.at - closed!.at} ms after the close`);
  });
});
