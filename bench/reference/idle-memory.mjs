// Server memory per idle subscribed connection over wss:// (which `wirehub bench`, a plain
// ws:// client, does not speak), or ws:// for comparison.
//
//   node bench/reference/idle-memory.mjs URL PID [N] [BATCH]
//   e.g. node bench/reference/idle-memory.mjs wss://127.0.0.1:8443/ws "$(pgrep -f 'wirehub serve')" 4000 50
//
// Opens one batch first (so that the allocator is warm), reads the server's VmRSS, then opens
// N more connections BATCH at a time (each subscribes to one of 10 channels), waits 2 s, and
// prints the RSS growth per connection. Certificates are not verified (test certificates).
// Loopback only; every connection is closed when the script exits.
import { readFileSync } from "node:fs";

import WebSocket from "ws";

const [url, pid, n = "4000", batch = "50"] = process.argv.slice(2);
if (url === undefined || pid === undefined) {
  console.error("usage: node idle-memory.mjs URL PID [N] [BATCH]");
  process.exit(2);
}
const host = new URL(url).hostname;
if (!/^127\.\d+\.\d+\.\d+$/.test(host) && host !== "localhost") {
  console.error("idle-memory.mjs: loopback addresses only");
  process.exit(2);
}
const rss = () => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);

const open = (i) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { rejectUnauthorized: false, perMessageDeflate: false });
    const timer = setTimeout(() => reject(new Error("no subscription within 10 s")), 10_000);
    ws.on("message", (data) => {
      const text = String(data);
      if (text.includes('"welcome"')) ws.send(JSON.stringify({ type: "subscribe", channel: `c${i % 10}` }));
      if (text.includes('"subscribed"')) {
        clearTimeout(timer);
        resolve(ws);
      }
    });
    ws.on("error", reject);
  });

const sockets = [];
const openBatch = async (from, count) => {
  sockets.push(...(await Promise.all(Array.from({ length: count }, (_, j) => open(from + j)))));
};
await openBatch(0, Number(batch));
const before = rss();
for (let i = 0; i < Number(n); i += Number(batch)) await openBatch(i, Math.min(Number(batch), Number(n) - i));
await new Promise((resolve) => setTimeout(resolve, 2000));
const after = rss();
console.log(`${n} idle subscribed connections to ${url}: server RSS +${after - before} KiB, ${((after - before) / Number(n)).toFixed(2)} KiB per connection`);
for (const ws of sockets) ws.terminate();
