// The server's own page (`/`) and dashboard (`/dashboard`) in a real headless Chromium, against
// the release binary: what a new user sees. Screenshots of each go to $WIREHUB_ARTIFACTS
// (default: $TMPDIR/wirehub-browser-artifacts).
//
// Needs Chromium (`$CHROMIUM`, or `chromium` on PATH); skipped without one unless
// WIREHUB_REQUIRE_BROWSER=1 (as in browser.test.ts).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { Browser, findChromium, type Page } from "./helpers/browser.js";
import { RedisServer, Server, publishHttp, wirehubBin, withTimeout } from "./helpers/server.js";

const chromium = findChromium();
if (chromium === undefined && process.env.WIREHUB_REQUIRE_BROWSER === "1") {
  throw new Error("WIREHUB_REQUIRE_BROWSER=1 but no Chromium was found (set $CHROMIUM or install chromium)");
}

const artifacts = process.env.WIREHUB_ARTIFACTS || path.join(tmpdir(), "wirehub-browser-artifacts");

/** Saves a PNG of the tab as `artifacts/NAME.png`. */
async function screenshot(page: Page, name: string): Promise<void> {
  const { data } = (await page.command("Page.captureScreenshot", { format: "png" })) as { data: string };
  mkdirSync(artifacts, { recursive: true });
  writeFileSync(path.join(artifacts, `${name}.png`), Buffer.from(data, "base64"));
}

async function open(browser: Browser, url: string): Promise<Page> {
  const page = await browser.open("about:blank#");
  await page.command("Emulation.setDeviceMetricsOverride", { width: 1000, height: 760, deviceScaleFactor: 1, mobile: false });
  await page.navigate(url);
  return page;
}

/** The offsets of the messages the page shows, in order. */
const OFFSETS = "[...document.querySelectorAll('#log li.message')].map((li) => Number(li.dataset.offset))";
const STATE = "document.getElementById('state')";

/** Waits until the page is subscribed (its log says so) and connected. */
async function subscribed(page: Page, channel: string): Promise<void> {
  await page.waitFor(
    `${STATE}.dataset.state === 'connected' && document.getElementById('log').textContent.includes('subscribed to ${channel}')`,
    `the page to subscribe to ${channel}`,
  );
}

describe("the server's page and dashboard in a real browser", { skip: chromium === undefined ? "no Chromium found" : false }, () => {
  let browser: Browser;
  const servers: Server[] = [];
  const redises: RedisServer[] = [];

  before(async () => {
    browser = await Browser.launch(chromium ?? "chromium");
  });

  after(async () => {
    await browser.close();
    await Promise.all(servers.map((server) => server.stop("SIGKILL")));
    await Promise.all(redises.map((redis) => redis.stop()));
  });

  test("issue 13: /?channel=probe shows a message published over HTTP within a second; two tabs chat", async () => {
    const server = await Server.start();
    servers.push(server);
    const page = await open(browser, `${server.httpUrl}/?channel=probe`);
    await subscribed(page, "probe");
    assert.equal(await page.evaluate("document.getElementById('channel-name').textContent"), "probe");
    assert.equal(await page.evaluate("document.getElementById('url').textContent"), server.url);

    const started = Date.now();
    const offset = await publishHttp(server, "probe", { text: "hello from curl" });
    await page.waitFor(
      `[...document.querySelectorAll('#log li.message')].some((li) => li.dataset.offset === '${offset}' && li.textContent.includes('hello from curl'))`,
      "the message published over HTTP",
      1000,
    );
    assert.ok(Date.now() - started < 1000, `shown after ${Date.now() - started} ms`);

    // A second tab on the same channel: what one sends from its box, both show.
    const other = await open(browser, `${server.httpUrl}/?channel=probe`);
    await subscribed(other, "probe");
    await page.evaluate("document.getElementById('name').value = 'ann'");
    await page.evaluate("document.getElementById('text').value = 'hi, is anyone here?'");
    await page.evaluate("document.getElementById('publish').requestSubmit()");
    for (const tab of [page, other]) {
      await tab.waitFor(
        "[...document.querySelectorAll('#log li.message')].some((li) => li.textContent.includes('ann:hi, is anyone here?'))",
        "the chat line in both tabs",
      );
    }
    await other.evaluate("document.getElementById('name').value = 'bob'");
    await other.evaluate("document.getElementById('text').value = '{\"text\": \"yes\", \"mood\": \"fine\"}'");
    await other.evaluate("document.getElementById('publish').requestSubmit()");
    await page.waitFor(
      `[...document.querySelectorAll('#log li.message code')].some((c) => c.textContent === '{"text":"yes","mood":"fine"}')`,
      "JSON typed in the box, sent as JSON",
    );
    await other.waitFor("document.getElementById('publish-status').textContent.startsWith('sent: offset')", "the ack");
    assert.deepEqual(await page.evaluate(OFFSETS), [1, 2, 3]);
    // The log is announced to screen readers; every control has a label.
    assert.equal(await page.evaluate("document.getElementById('log').getAttribute('role')"), "log");
    assert.equal(
      await page.evaluate("[...document.querySelectorAll('input')].filter((i) => !document.querySelector(`label[for=\"${i.id}\"]`)).length"),
      0,
    );
    await screenshot(page, "page");
  });

  test("issue 13: a restart on the same port: reconnecting with its delay, then what was published meanwhile, without gap or duplicate", async () => {
    // History that outlives the node: Redis keeps the channel's stream across the restart.
    const redis = await RedisServer.start();
    redises.push(redis);
    const args = ["--broker", redis.url, "--history-size", "100"];
    let server = await Server.start(args);
    servers.push(server);
    const peer = await Server.start(args);
    servers.push(peer);
    const page = await open(browser, `${server.httpUrl}/?channel=probe`);
    await subscribed(page, "probe");
    for (const n of [1, 2]) await publishHttp(server, "probe", { n });
    await page.waitFor(`${OFFSETS}.length === 2`, "the first two messages");

    await server.stop("SIGKILL");
    await page.waitFor(`${STATE}.dataset.state === 'reconnecting'`, "the page to show that it reconnects");
    const shown = await page.evaluate<{ text: string; delay: string; attempt: string; countdown: string }>(
      `({ text: ${STATE}.textContent, delay: ${STATE}.dataset.delay, attempt: ${STATE}.dataset.attempt,
          countdown: document.getElementById('countdown').textContent })`,
    );
    assert.match(shown.text, /^reconnecting: attempt \d+ in \d+\.\d s/);
    assert.ok(Number(shown.delay) >= 0 && Number(shown.attempt) >= 1, JSON.stringify(shown));
    assert.match(shown.countdown, /^next try in \d+\.\d s$/);
    await screenshot(page, "page-reconnecting");

    // Published while the page's node is down, through another node.
    for (const n of [3, 4, 5]) await publishHttp(peer, "probe", { n });
    server = await server.restart();
    servers.push(server);
    await page.waitFor(`${STATE}.dataset.state === 'connected'`, "the page to reconnect", 20_000);
    await page.waitFor(`${OFFSETS}.length === 5`, "the messages published meanwhile");
    assert.equal(await page.evaluate("document.getElementById('recovery').dataset.outcome"), "recovered");
    assert.match(
      await page.evaluate<string>("document.getElementById('recovery').textContent"),
      /^recovered: 3 missed messages replayed \(offsets 3–5\)/,
    );
    await publishHttp(server, "probe", { n: 6 });
    await page.waitFor(`${OFFSETS}.length === 6`, "a live message after the recovery");
    assert.deepEqual(await page.evaluate(OFFSETS), [1, 2, 3, 4, 5, 6], "no gap, no duplicate");
    assert.deepEqual(
      await page.evaluate("[...document.querySelectorAll('#log li.message')].map((li) => JSON.parse(li.dataset.json).n)"),
      [1, 2, 3, 4, 5, 6],
    );
    assert.equal(await page.evaluate("document.querySelectorAll('#log li.gap').length"), 0);
    await screenshot(page, "page-recovered");
  });

  test("issue 13: an in-memory server restarted loses its history: the page shows the gap, then goes on", async () => {
    let server = await Server.start();
    servers.push(server);
    const page = await open(browser, `${server.httpUrl}/?channel=probe`);
    await subscribed(page, "probe");
    await publishHttp(server, "probe", { n: 1 });
    await page.waitFor(`${OFFSETS}.length === 1`, "the first message");
    await server.stop("SIGKILL");
    server = await server.restart();
    servers.push(server);
    await page.waitFor("document.getElementById('recovery').dataset.outcome === 'gap'", "the gap", 20_000);
    assert.match(await page.evaluate<string>("document.getElementById('recovery').textContent"), /^gap: messages after offset 1 of epoch/);
    await publishHttp(server, "probe", { n: 2 });
    await page.waitFor(`${OFFSETS}.length === 2`, "a message of the new epoch");
    assert.equal(await page.evaluate("document.querySelectorAll('#log li.gap').length"), 1);
  });

  test("issue 13: the dashboard's counters and charts move while a wirehub bench run is going", async () => {
    const server = await Server.start(["--publish-rate", "0"]);
    servers.push(server);
    const page = await open(browser, `${server.httpUrl}/dashboard`);
    await page.waitFor("document.getElementById('ready').dataset.ready === 'true'", "the dashboard's first figures");
    const before = await page.evaluate<string>("document.getElementById('chart-out').toDataURL()");

    const bench = spawn(
      wirehubBin(),
      ["bench", "fanout", "--url", server.url, "-n", "40", "-m", "6000", "--rate", "1000", "--duration", "6s", "--max-time", "30s", "-q"],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let benchLog = "";
    bench.stderr?.on("data", (chunk: Buffer) => (benchLog = (benchLog + chunk.toString()).slice(-5000)));
    const exited = new Promise<number | null>((resolve) => bench.once("exit", resolve));
    try {
      const num = (id: string): string => `Number(document.getElementById('${id}').textContent.replace(/,/g, ''))`;
      await page.waitFor(`${num("connections")} >= 40`, "the bench's connections on the dashboard", 15_000);
      await page.waitFor(`${num("out-rate")} > 1000 && ${num("in-rate")} > 100`, "deliveries and messages per second", 15_000);
      await page.waitFor(
        "Number(document.getElementById('chart-out').dataset.max) > 1000 && Number(document.getElementById('chart-connections').dataset.max) >= 40",
        "the charts to draw the run",
        15_000,
      );
      assert.notEqual(await page.evaluate("document.getElementById('chart-out').toDataURL()"), before, "the chart moved");
      assert.match(await page.evaluate<string>("document.getElementById('chart-out').getAttribute('aria-label')"), /^Deliveries out per second over the last minute: now/);
      assert.equal(await page.evaluate("document.getElementById('broker').textContent"), "memory: reachable");
      await screenshot(page, "dashboard");
    } finally {
      const code = await withTimeout(exited, 30_000, "the bench run to end").catch((error: unknown) => {
        bench.kill("SIGKILL");
        throw error;
      });
      assert.equal(code, 0, benchLog);
    }
    // Once the run closed its connections, the closes table shows them.
    await page.waitFor(
      "document.getElementById('connections').textContent === '0' && [...document.querySelectorAll('#closes td')].some((td) => td.textContent === '1000')",
      "the closes by code",
      15_000,
    );
  });

  test("issue 13: with an API key, the dashboard asks for it and sends it as Bearer", async () => {
    const server = await Server.start(["--api-key", "dash-key"]);
    servers.push(server);
    const page = await open(browser, `${server.httpUrl}/dashboard`);
    await page.waitFor("!document.getElementById('auth').hidden", "the key form");
    assert.equal(await page.evaluate("document.activeElement.id"), "key");
    await page.evaluate("document.getElementById('key').value = 'not-it'");
    await page.evaluate("document.getElementById('auth').requestSubmit()");
    await page.waitFor("document.getElementById('auth-problem').textContent === 'that key was refused'", "the refusal");
    await page.evaluate("document.getElementById('key').value = 'dash-key'");
    await page.evaluate("document.getElementById('auth').requestSubmit()");
    await page.waitFor("document.getElementById('ready').dataset.ready === 'true'", "the figures, with the key");
    assert.equal(await page.evaluate("document.getElementById('auth').hidden"), true);
    const unauthorized = await fetch(`${server.httpUrl}/api/stats`);
    assert.equal(unauthorized.status, 401);
  });
});
