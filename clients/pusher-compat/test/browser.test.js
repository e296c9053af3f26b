// pusher-js's browser build in a real headless Chromium (driven with playwright-core, the
// system's Chromium): a page served by the test loads `pusher-js/dist/web/pusher.min.js`,
// connects with the browser's WebSocket, subscribes to a public and a private channel (the
// auth endpoint on another origin, through the browser's XHR and CORS) and receives events
// triggered with the `pusher` server SDK.
//
// Needs Chromium (`$CHROMIUM`, else chromium or chromium-browser on PATH); without one the
// tests are skipped, unless WIREHUB_REQUIRE_BROWSER=1 makes that a failure.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { APP, findChromium, Server, startApp } from "./helpers.js";

const executablePath = findChromium();
if (executablePath === undefined && process.env.WIREHUB_REQUIRE_BROWSER === "1") {
  throw new Error("WIREHUB_REQUIRE_BROWSER=1 but no Chromium was found (set $CHROMIUM or install chromium)");
}

/**
 * Serves a page loading pusher-js's browser build at `/`, and one loading its build with
 * end-to-end encryption at `/encrypted`.
 */
async function startPageServer() {
  const require = createRequire(import.meta.url);
  const scripts = {
    "/pusher.min.js": require.resolve("pusher-js/dist/web/pusher.min.js"),
    "/pusher-with-encryption.min.js": require.resolve("pusher-js/dist/web/pusher-with-encryption.min.js"),
  };
  const pages = { "/": "/pusher.min.js", "/encrypted": "/pusher-with-encryption.min.js" };
  const server = http.createServer((request, response) => {
    const url = request.url ?? "/";
    if (url in pages) {
      response.writeHead(200, { "content-type": "text/html" });
      response.end(`<!doctype html><title>pusher-js</title><script src="${pages[url]}"></script>`);
    } else if (url in scripts) {
      readFile(scripts[url]).then(
        (body) => response.writeHead(200, { "content-type": "text/javascript" }).end(body),
        () => response.writeHead(500).end(),
      );
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}

describe("pusher-js in headless Chromium", { skip: executablePath === undefined ? "no Chromium found" : false }, () => {
  /** @type {Server} */
  let server;
  let app;
  let pages;
  let browser;
  let page;

  before(async () => {
    server = await Server.start();
    app = await startApp(server);
    pages = await startPageServer();
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update"],
    });
    page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (error) => errors.push(error));
    await page.goto(pages.url);
    assert.equal(await page.evaluate(() => typeof window.Pusher), "function", String(errors));
  });

  after(async () => {
    await browser?.close();
    await pages?.close();
    await app?.close();
    await server?.stop();
  });

  test("connects with the browser's WebSocket and gets a socket id", async () => {
    const socketId = await page.evaluate(
      ({ key, options }) =>
        new Promise((resolve, reject) => {
          const pusher = new window.Pusher(key, options);
          window.client = pusher;
          window.received = [];
          pusher.connection.bind("connected", () => resolve(pusher.connection.socket_id));
          pusher.connection.bind("failed", () => reject(new Error("pusher-js failed")));
          setTimeout(() => reject(new Error(`not connected: ${pusher.connection.state}`)), 5_000);
        }),
      {
        key: APP.key,
        options: server.clientOptions({
          channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax" },
        }),
      },
    );
    assert.match(socketId, /^\d+\.\d+$/);
  });

  test("a public channel in the page receives an event triggered with the server SDK", async () => {
    await page.evaluate(
      (name) =>
        new Promise((resolve, reject) => {
          const channel = window.client.subscribe(name);
          channel.bind("news", (data) => window.received.push({ channel: name, data }));
          channel.bind("pusher:subscription_succeeded", resolve);
          setTimeout(() => reject(new Error(`not subscribed to ${name}`)), 5_000);
        }),
      "browser-news",
    );
    await server.sdk().trigger("browser-news", "news", { headline: "it works" });
    await page.waitForFunction(() => window.received.length >= 1, null, { timeout: 5_000 });
    assert.deepEqual(await page.evaluate(() => window.received), [{ channel: "browser-news", data: { headline: "it works" } }]);
  });

  test("a private channel is authorized cross-origin through the browser's XHR", async () => {
    await page.evaluate(
      (name) =>
        new Promise((resolve, reject) => {
          const channel = window.client.subscribe(name);
          channel.bind("secret", (data) => window.received.push({ channel: name, data }));
          channel.bind("pusher:subscription_succeeded", resolve);
          channel.bind("pusher:subscription_error", (error) => reject(new Error(JSON.stringify(error))));
          setTimeout(() => reject(new Error(`not subscribed to ${name}`)), 5_000);
        }),
      "private-browser",
    );
    assert.ok(app.requests.some((r) => r.url === "/pusher/auth" && r.body.includes("private-browser")));
    await server.sdk().trigger("private-browser", "secret", { n: 42 });
    await page.waitForFunction(() => window.received.length >= 2, null, { timeout: 5_000 });
    assert.deepEqual((await page.evaluate(() => window.received))[1], { channel: "private-browser", data: { n: 42 } });
  });

  test("a private-encrypted- channel: the server relays the SDK's ciphertext, the page decrypts it", async () => {
    const encrypted = await browser.newPage();
    try {
      await encrypted.goto(`${pages.url}encrypted`);
      await encrypted.evaluate(
        ({ key, options, name }) =>
          new Promise((resolve, reject) => {
            const pusher = new window.Pusher(key, options);
            window.received = [];
            const channel = pusher.subscribe(name);
            channel.bind("secret", (data) => window.received.push(data));
            channel.bind("pusher:subscription_succeeded", resolve);
            channel.bind("pusher:subscription_error", (error) => reject(new Error(JSON.stringify(error))));
            setTimeout(() => reject(new Error(`not subscribed to ${name}`)), 5_000);
          }),
        {
          key: APP.key,
          name: "private-encrypted-browser",
          options: server.clientOptions({
            channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax" },
          }),
        },
      );
      await server.sdk().trigger("private-encrypted-browser", "secret", { pin: "1234" });
      await encrypted.waitForFunction(() => window.received.length >= 1, null, { timeout: 5_000 });
      assert.deepEqual(await encrypted.evaluate(() => window.received), [{ pin: "1234" }]);
      // What the server kept is the SDK's nonce and ciphertext, not the data.
      const history = await (await fetch(`${server.httpUrl}/api/history?channel=private-encrypted-browser`)).json();
      const stored = JSON.parse(history.messages[0].data.data);
      assert.deepEqual(Object.keys(stored).sort(), ["ciphertext", "nonce"]);
      assert.ok(!history.messages[0].data.data.includes("1234"));
    } finally {
      await encrypted.close();
    }
  });
});
