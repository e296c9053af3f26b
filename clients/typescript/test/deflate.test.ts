// permessage-deflate (issue 14) through the SDK under Node with the `ws` package, against the
// real server binary: the extension is negotiated by `ws` (perMessageDeflate is on by default),
// large messages arrive intact in both directions, and the server compressed each once.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import WebSocket from "ws";

import { type Message, WirehubClient } from "../src/index.js";
import { Collector, Server, publishHttp, withTimeout } from "./helpers/server.js";

const servers: Server[] = [];
const clients: WirehubClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(servers.splice(0).map((server) => server.stop("SIGKILL")));
});

/** The sockets the SDK opened, to read what they negotiated. */
const opened: WebSocket[] = [];
class RecordingWebSocket extends WebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    opened.push(this);
  }
}

async function connected(url: string): Promise<WirehubClient> {
  const client = new WirehubClient(url, {
    WebSocket: RecordingWebSocket as unknown as typeof WebSocket,
    requestTimeout: 5000,
    connectTimeout: 5000,
  });
  clients.push(client);
  await withTimeout(client.connect(), 5000, `a connection to ${url}`);
  return client;
}

const large = {
  items: Array.from({ length: 40 }, (_, i) => ({ symbol: `SYM${i}`, bid: 100 + i, ask: 101 + i })),
};

describe("permessage-deflate under Node", () => {
  test("issue 14: negotiated by ws, messages intact both ways, compressed once for all", async () => {
    const server = await Server.start([]);
    servers.push(server);
    opened.length = 0;
    const first = await connected(server.url);
    const second = await connected(server.url);
    assert.equal(opened.length, 2);
    for (const socket of opened) {
      // ws names the negotiated extensions (their parameters stay inside ws).
      assert.equal(socket.extensions, "permessage-deflate");
    }
    assert.equal(await server.metric("wirehub_deflate_connections_total"), 2);
    const got1 = new Collector<Message>();
    const got2 = new Collector<Message>();
    await first.subscribe("news", got1.push);
    await second.subscribe("news", got2.push);
    await publishHttp(server, "news", large);
    // Published through the SDK: ws compresses it, the server inflates it.
    assert.equal(await first.publish("news", { ...large, from: "sdk" }), 2);
    for (const got of [got1, got2]) {
      const items = await got.waitFor(2);
      assert.deepEqual(items[0]?.data, large);
      assert.deepEqual(items[1]?.data, { ...large, from: "sdk" });
    }
    assert.equal(await server.metric("wirehub_deflate_compressions_total"), 2);
  });
});
