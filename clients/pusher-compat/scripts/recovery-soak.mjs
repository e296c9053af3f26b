// A longer run of the recovery connector than the tests make: CLIENTS pusher-js clients, each
// through its own Balancer, cut at random (every 0.3–1.5 s) for SECONDS while the server SDK
// triggers a numbered sequence on two channels (about 200 a second); with --redis, two nodes
// on a redis-server, each cut sending the client to a random node. Prints one JSON line: every
// client's sequences whole or not, cuts, recoveries, events per recovery, time to recover.
//   node scripts/recovery-soak.mjs [--redis] [--clients 10] [--seconds 30]
import { parseArgs } from "node:util";

import { recover } from "@wirehub/pusher-recovery";

import { APP, Balancer, Pusher, RedisServer, Server } from "../test/helpers.js";

const { values } = parseArgs({
  options: { redis: { type: "boolean", default: false }, clients: { type: "string", default: "10" }, seconds: { type: "string", default: "30" } },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const redis = values.redis ? await RedisServer.start() : undefined;
const args = ["--history-size", "5000", ...(redis ? ["--broker", redis.url, "--redis-prefix", `soak-${process.pid}:`] : [])];
const nodes = await Promise.all((redis ? [0, 1] : [0]).map(() => Server.start(args)));
const channels = ["soak-a", "private-soak-b"];

const clients = [];
for (let i = 0; i < CLIENTS; i++) {
  const balancer = await Balancer.start(nodes[i % nodes.length].port);
  const pusher = new Pusher(APP.key, nodes[0].clientOptions({ wsPort: balancer.port, channelAuthorization: { customHandler: authorize } }));
  const client = { balancer, pusher, recovered: [], failed: [], seen: {}, cuts: 0 };
  client.recovery = recover(pusher, { onRecovered: (r) => client.recovered.push(r), onRecoveryFailed: (f) => client.failed.push(f) });
  for (const name of channels) {
    client.seen[name] = [];
    pusher.subscribe(name).bind("n", (data) => client.seen[name].push(data.n));
  }
  clients.push(client);
}

/** Channel authorization signed in process with the server SDK. */
function authorize({ socketId, channelName }, callback) {
  callback(null, nodes[0].sdk().authorizeChannel(socketId, channelName));
}

await sleep(1000);
let n = 0;
let stopped = false;
const started = Date.now();
const publisher = (async () => {
  while (!stopped) {
    n += 1;
    await nodes[n % nodes.length].sdk().trigger(channels, "n", { n });
    await sleep(4);
  }
})();
await Promise.all(
  clients.map(async (client) => {
    while (Date.now() - started < SECONDS * 1000) {
      await sleep(300 + Math.random() * 1200);
      if (client.pusher.connection.state !== "connected") continue;
      client.balancer.retarget(nodes[Math.floor(Math.random() * nodes.length)].port);
      client.balancer.cut();
      client.cuts += 1;
    }
  }),
);
await sleep(3000);
stopped = true;
await publisher;
await sleep(3000);

const whole = clients.every((c) => channels.every((name) => c.seen[name].length === n && c.seen[name].every((v, i) => v === i + 1)));
const recoveries = clients.flatMap((c) => c.recovered);
const sorted = (values) => values.slice().sort((a, b) => a - b);
const pct = (values, p) => values[Math.min(values.length - 1, Math.floor(values.length * p))];
const events = sorted(recoveries.map((r) => r.events));
const ms = sorted(recoveries.map((r) => r.ms));
console.log(
  JSON.stringify({
    whole,
    nodes: nodes.length,
    clients: CLIENTS,
    published: n,
    cuts: clients.reduce((s, c) => s + c.cuts, 0),
    recoveries: recoveries.length,
    failures: clients.flatMap((c) => c.failed.map((f) => f.reason)),
    duplicatesDropped: clients.reduce((s, c) => s + c.recovery.stats.duplicates, 0),
    eventsPerRecovery: { min: events[0], median: pct(events, 0.5), max: events.at(-1) },
    msToRecover: { median: pct(ms, 0.5), p95: pct(ms, 0.95), max: ms.at(-1) },
  }),
);
for (const client of clients) {
  client.pusher.disconnect();
  await client.balancer.close();
}
for (const node of nodes) await node.stop();
await redis?.stop();
process.exit(whole ? 0 : 1);
