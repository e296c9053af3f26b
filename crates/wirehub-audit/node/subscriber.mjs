// A subscriber of the audit run on the TypeScript SDK under Node: prints what the
// application sees, in order, as one JSON object per line on stdout.
//
//   node subscriber.mjs SDK_DIST_INDEX URL MODE CHANNEL...
//
// SDK_DIST_INDEX is clients/typescript/dist/index.js (built with `npm ci && npm run build`),
// MODE `iterator` (the async iterator, which a stall stops reading) or `callback`.
// Lines out:
//   {"k":"ready"}                                   every subscription was confirmed
//   {"k":"msg","ch":C,"off":N,"data":D}             a delivered message
//   {"k":"gap","ch":C,"what":TEXT}                  a loss the SDK reported (recoveryFailed,
//                                                   lagged, gap, or any other non-message event)
//   {"k":"closed","code":N}                         a connection ended (close code)
//   {"k":"fatal","what":TEXT}                       the client stopped or a subscription ended
// Lines in (stdin): {"stall": MS}: the iterators stop reading for MS milliseconds while the
// SDK keeps receiving, the way a busy application would.

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [sdkIndex, url, mode, ...channels] = process.argv.slice(2);
if (!sdkIndex || !url || !["iterator", "callback"].includes(mode) || channels.length === 0) {
  process.stderr.write("usage: subscriber.mjs SDK_DIST_INDEX URL iterator|callback CHANNEL...\n");
  process.exit(2);
}

const out = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const sdk = await import(pathToFileURL(sdkIndex).href);

// The `ws` package (a dev dependency of the SDK) shows the server's pings; without it, the
// platform's WebSocket (Node 22, or 20 with --experimental-websocket).
let WebSocket = globalThis.WebSocket;
try {
  const require = createRequire(join(dirname(sdkIndex), "..", "package.json"));
  WebSocket = require("ws");
} catch {
  // Keep the global one.
}
if (!WebSocket) {
  out({ k: "fatal", what: "no WebSocket implementation (npm ci in clients/typescript)" });
  process.exit(1);
}

const client = new sdk.WirehubClient(url, {
  WebSocket,
  backoff: { initial: 100, max: 1000 },
  healthyAfter: 2000,
  connectTimeout: 3000,
  idleTimeout: 3000,
  pongTimeout: 2000,
  requestTimeout: 600000,
});
client.on("disconnected", ({ code }) => out({ k: "closed", code: code ?? null }));
client.on("stopped", ({ error }) => out({ k: "fatal", what: `stopped: ${error?.message ?? "closed"}` }));
client.on("subscriptionEnded", ({ channel, error }) =>
  out({ k: "fatal", what: `subscription to ${channel} ended: ${error?.message}` }),
);

let stalledUntil = 0;
createInterface({ input: process.stdin }).on("line", (line) => {
  try {
    const command = JSON.parse(line);
    if (typeof command.stall === "number") stalledUntil = Date.now() + command.stall;
  } catch {
    // Not a command.
  }
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Prints one subscription event as the application sees it. */
function report(channel, event) {
  if (event.type === "message") {
    out({ k: "msg", ch: channel, off: event.offset, data: event.data });
  } else {
    const { type, ...detail } = event;
    out({ k: "gap", ch: channel, what: `${type} ${JSON.stringify(detail)}` });
  }
}

client.connect().catch(() => {});
const subscriptions = await Promise.all(
  channels.map((channel) =>
    mode === "callback"
      ? client.subscribe(channel, {
          onMessage: (message) => report(channel, { type: "message", ...message }),
          onRecoveryFailed: (event) => report(channel, { type: "recoveryFailed", ...event }),
          onGap: (event) => report(channel, { type: "gap", ...event }),
        })
      : client.subscribe(channel),
  ),
);
out({ k: "ready" });

if (mode === "iterator") {
  await Promise.all(
    subscriptions.map(async (subscription) => {
      try {
        for await (const event of subscription) {
          report(subscription.channel, event);
          // In slices, so that a new command (an end of the stall now) takes effect soon.
          while (Date.now() < stalledUntil) await sleep(Math.min(50, stalledUntil - Date.now()));
        }
      } catch (error) {
        out({ k: "fatal", what: `iterator of ${subscription.channel}: ${error?.message}` });
      }
    }),
  );
} else {
  // The callbacks run until the process is killed.
  await new Promise(() => {});
}
