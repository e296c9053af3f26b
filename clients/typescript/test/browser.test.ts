// In a real browser (headless Chromium over the DevTools Protocol): the SDK with the browser's
// own WebSocket, against the real server binary. Browsers cannot
// set headers on a WebSocket and hide ping frames and HTTP statuses; these tests cover what
// that changes: `?token=`, origins, reconnection seen from a page.
//
// Needs Chromium (`$CHROMIUM`, or `chromium` on PATH; `scripts/test.sh` installs it). Without
// one the tests are skipped, unless WIREHUB_REQUIRE_BROWSER=1 makes that a failure.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Browser, findChromium, type Page } from "./helpers/browser.js";
import { Server, makeToken } from "./helpers/server.js";

const chromium = findChromium();
if (chromium === undefined && process.env.WIREHUB_REQUIRE_BROWSER === "1") {
  throw new Error("WIREHUB_REQUIRE_BROWSER=1 but no Chromium was found (set $CHROMIUM or install chromium)");
}

/** Serves the built SDK (`dist/`) under `/dist/` and an empty page at `/`. */
async function startStaticServer(): Promise<{ server: http.Server; origin: string }> {
  const dist = fileURLToPath(new URL("../../dist/", import.meta.url));
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    if (url.pathname === "/") {
      response.writeHead(200, { "content-type": "text/html" });
      response.end("<!doctype html><title>wirehub SDK test</title>");
      return;
    }
    const name = url.pathname.startsWith("/dist/") ? url.pathname.slice("/dist/".length) : "";
    if (!/^[\w.-]+\.js$/.test(name)) {
      response.writeHead(404).end();
      return;
    }
    readFile(dist + name).then(
      (body) => {
        response.writeHead(200, { "content-type": "text/javascript" });
        response.end(body);
      },
      () => response.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no address");
  return { server, origin: `http://127.0.0.1:${address.port}` };
}

/** Closes the static server, and the keep-alive connections the browser holds to it. */
async function stopStaticServer(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

async function publishHttp(server: Server, channel: string, data: unknown): Promise<number> {
  const response = await fetch(`${server.httpUrl}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { offset: number }).offset;
}

describe("in a real browser", { skip: chromium === undefined ? "no Chromium found" : false }, () => {
  let browser: Browser;
  /** Serves the built SDK to the pages of the tests that load it. */
  let assets: { server: http.Server; origin: string };
  const servers: Server[] = [];

  before(async () => {
    browser = await Browser.launch(chromium ?? "chromium");
    assets = await startStaticServer();
  });

  after(async () => {
    await browser.close();
    await stopStaticServer(assets.server);
    await Promise.all(servers.map((server) => server.stop("SIGKILL")));
  });

  test("the SDK with the browser's WebSocket: ?token=, publish and receive, recovery after a restart", async () => {
    const secret = "a-browser-test-secret";
    let server = await Server.start(["--jwt-secret", secret, "--allowed-origins", assets.origin, "--publish-rate", "0"]);
    servers.push(server);
    const token = await makeToken(["--secret", secret, "--sub", "browser", "--subscribe", "room:*", "--publish", "room:*"]);
    const page = await browser.open(`${assets.origin}/`);
    await page.evaluate(`(async () => {
      const { WirehubClient } = await import("/dist/index.js");
      window.received = [];
      window.failures = [];
      window.states = [];
      const client = new WirehubClient(${JSON.stringify(server.url)}, {
        token: ${JSON.stringify(token)},
        backoff: { initial: 50, max: 500 },
        idleTimeout: 2000,
        pongTimeout: 2000,
      });
      window.client = client;
      client.on("state", ({ state }) => window.states.push(state));
      client.on("recoveryFailed", ({ channel, position }) => window.failures.push({ channel, position }));
      await client.connect();
      await client.subscribe("room:1", (message) => window.received.push({ offset: message.offset, data: message.data }));
    })()`);

    // Published from the page (acknowledged with its offset) and over HTTP: both arrive.
    const offset = await page.evaluate<number>(`client.publish("room:1", { from: "page" })`);
    assert.equal(offset, 1);
    assert.equal(await publishHttp(server, "room:1", { from: "api" }), 2);
    await page.waitFor("window.received.length === 2", "both messages in the page");
    assert.deepEqual(await page.evaluate("window.received"), [
      { offset: 1, data: { from: "page" } },
      { offset: 2, data: { from: "api" } },
    ]);

    // The token's permissions hold for the browser too.
    const refused = await page.evaluate<string>(
      `client.subscribe("other").then(() => "subscribed", (error) => error.code)`,
    );
    assert.equal(refused, "forbidden");

    // A restart loses the in-memory history: the SDK reconnects, resubscribes and says so.
    await server.stop("SIGKILL");
    server = await server.restart();
    servers.push(server);
    await page.waitFor("window.failures.length === 1", "the recoveryFailed report", 15_000);
    const failures = await page.evaluate<{ channel: string; position: { offset: number } }[]>("window.failures");
    assert.equal(failures[0]?.channel, "room:1");
    assert.equal(failures[0]?.position.offset, 0);
    assert.equal(await publishHttp(server, "room:1", { from: "after" }), 1);
    await page.waitFor("window.received.length === 3", "the message after the restart");
    assert.deepEqual(await page.evaluate("window.received[2]"), { offset: 1, data: { from: "after" } });
    const states = await page.evaluate<string[]>("window.states");
    assert.ok(states.includes("reconnecting"), states.join(","));

    await page.evaluate("client.close()");
  });

  test("issue 14: Chromium negotiates permessage-deflate; the SDK gets large messages intact, compressed once", async () => {
    const server = await Server.start(["--allowed-origins", assets.origin, "--publish-rate", "0"]);
    servers.push(server);
    const page = await browser.open(`${assets.origin}/`);
    const large = { items: Array.from({ length: 40 }, (_, i) => ({ symbol: `SYM${i}`, bid: 100 + i })) };
    const extensions = await page.evaluate<string>(`new Promise((resolve, reject) => {
      const socket = new WebSocket(${JSON.stringify(server.url)});
      socket.onopen = () => { resolve(socket.extensions); socket.close(); };
      socket.onerror = () => reject(new Error("no connection"));
    })`);
    assert.equal(extensions, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    await page.evaluate(`(async () => {
      const { WirehubClient } = await import("/dist/index.js");
      window.received = [];
      const client = new WirehubClient(${JSON.stringify(server.url)});
      window.client = client;
      await client.connect();
      await client.subscribe("big", (message) => window.received.push(message.data));
    })()`);
    assert.equal(await publishHttp(server, "big", large), 1);
    const offset = await page.evaluate<number>(`client.publish("big", ${JSON.stringify({ ...large, from: "page" })})`);
    assert.equal(offset, 2);
    await page.waitFor("window.received.length === 2", "both large messages in the page");
    assert.deepEqual(await page.evaluate("window.received"), [large, { ...large, from: "page" }]);
    assert.equal(await server.metric("wirehub_deflate_connections_total"), 2);
    assert.equal(await server.metric("wirehub_deflate_compressions_total"), 2);
    await page.evaluate("client.close()");
  });

  test("the SDK reconnects as soon as the browser is back online, not after its backoff delay", async () => {
    let server = await Server.start(["--allowed-origins", assets.origin]);
    servers.push(server);
    const page = await browser.open(`${assets.origin}/`);
    await page.evaluate(`(async () => {
      const { WirehubClient } = await import("/dist/index.js");
      window.delays = [];
      const client = new WirehubClient(${JSON.stringify(server.url)}, {
        backoff: { initial: 60000, max: 60000, jitter: "none" },
      });
      window.client = client;
      client.on("reconnecting", ({ delay }) => window.delays.push(delay));
      await client.connect();
    })()`);

    // The laptop loses its network and the server goes away meanwhile: the client waits
    // a minute before its next attempt...
    await page.setOffline(true);
    await server.stop("SIGKILL");
    await page.waitFor("client.state === 'reconnecting'", "the client to notice");
    assert.deepEqual(await page.evaluate("window.delays"), [60000]);
    server = await server.restart();
    servers.push(server);
    // ...but the network coming back cuts the wait short.
    await page.setOffline(false);
    await page.waitFor("client.state === 'connected'", "the reconnect right after `online`", 10_000);
    assert.equal(await page.evaluate("navigator.onLine"), true);
    await page.evaluate("client.close()");
  });

  test("a page from an origin that is not allowed cannot open a WebSocket", async () => {
    const server = await Server.start(["--allowed-origins", "https://app.example.com"]);
    servers.push(server);
    const page = await browser.open(`${assets.origin}/`);
    const outcome = await page.evaluate<{ opened: boolean; code: number }>(`new Promise((resolve) => {
      const ws = new WebSocket(${JSON.stringify(server.url)});
      let opened = false;
      ws.onopen = () => { opened = true; };
      ws.onclose = (event) => resolve({ opened, code: event.code });
    })`);
    assert.deepEqual(outcome, { opened: false, code: 1006 });
    assert.equal(await server.metric("wirehub_upgrades_refused_total"), 1);
  });
});
