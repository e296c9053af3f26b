// Real processes and small real HTTP servers for the Pusher compatibility tests: the release
// `wirehub serve` with one Pusher app on a free port, a `redis-server`, the app's auth
// endpoints written with the `pusher` server SDK, a webhook receiver, and waits that time out
// with a clear message.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

import PusherServer from "pusher";
import Pusher from "pusher-js";

export { Pusher, PusherServer };

/** The Pusher app every test server serves. */
export const APP = { id: "1", key: "app-key", secret: "app-secret" };

/**
 * The master key the app's server SDK derives `private-encrypted-` channels' secrets from
 * (end-to-end: the server only relays what the SDK encrypted).
 */
export const ENCRYPTION_MASTER_KEY = randomBytes(32).toString("base64");

/** `target/release/wirehub` of this repository, or `$WIREHUB_BIN`. */
export function wirehubBin() {
  const fromEnv = process.env.WIREHUB_BIN;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  return fileURLToPath(new URL("../../../target/release/wirehub", import.meta.url));
}

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** A running `wirehub serve` with the Pusher app {@link APP}. */
export class Server {
  /** @param {import("node:child_process").ChildProcess} child */
  constructor(child, port, args, log, exited) {
    this.child = child;
    this.args = args;
    this.port = port;
    this.log = log;
    this.exited = exited;
    child.stderr.on("data", (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-20_000);
    });
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Starts `wirehub serve --listen 127.0.0.1:PORT --pusher-app-* ... ARGS` (PORT 0 picks a
   * free one) and waits for the `addr=` line of its log.
   * @param {string[]} args
   * @returns {Promise<Server>}
   */
  static async start(args = [], port = 0) {
    // A port just freed by a stopped server may take a moment to be bound again.
    for (let attempt = 1; ; attempt++) {
      try {
        return await Server.#startOnce(args, port);
      } catch (error) {
        if (port === 0 || attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** The same server again, on the same port. */
  restart() {
    return Server.start(this.args, this.port);
  }

  static #startOnce(args, port) {
    const bin = wirehubBin();
    if (!existsSync(bin)) {
      throw new Error(`${bin} not found: run \`cargo build --release -p wirehub\` or set WIREHUB_BIN`);
    }
    const fullArgs = [
      "serve",
      "--listen",
      `127.0.0.1:${port}`,
      "--heartbeat-interval",
      "1s",
      "--shutdown-drain",
      "100ms",
      "--log-format",
      "text",
      "--pusher-app-id",
      APP.id,
      "--pusher-app-key",
      APP.key,
      "--pusher-app-secret",
      APP.secret,
      ...args,
    ];
    const child = spawn(bin, fullArgs, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
    });
    children.add(child);
    const exited = new Promise((resolve) => {
      child.once("exit", (code) => {
        children.delete(child);
        resolve(code);
      });
    });
    return new Promise((resolve, reject) => {
      let log = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`wirehub did not log its address within 10 s:\n${log}`));
      }, 10_000);
      const onData = (chunk) => {
        log += chunk.toString();
        const match = log.match(/addr=127\.0\.0\.1:(\d+)/);
        if (match !== null) {
          clearTimeout(timer);
          child.stderr.off("data", onData);
          child.off("exit", onExit);
          resolve(new Server(child, Number(match[1]), args, log, exited));
        }
      };
      const onExit = (code) => {
        clearTimeout(timer);
        reject(new Error(`wirehub exited with ${code} before listening:\n${log}`));
      };
      child.stderr.on("data", onData);
      child.once("exit", onExit);
    });
  }

  /** Sends `signal` (SIGKILL by default) and waits for the server to exit. */
  async stop(signal = "SIGKILL") {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await withTimeout(this.exited, 10_000, "wirehub to exit");
  }

  /** The `pusher` server SDK pointed at this server (`secret` to sign wrongly). */
  sdk(secret = APP.secret) {
    return new PusherServer({
      appId: APP.id,
      key: APP.key,
      secret,
      host: "127.0.0.1",
      port: String(this.port),
      useTLS: false,
      encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY,
    });
  }

  /** pusher-js options for this server (merged with `extra`). */
  clientOptions(extra = {}) {
    return {
      cluster: "",
      wsHost: "127.0.0.1",
      wsPort: this.port,
      forceTLS: false,
      enabledTransports: ["ws"],
      disableStats: true,
      ...extra,
    };
  }

  /** `POST /api/publish` (protocol v1): the offset the server gave the message. */
  async publishV1(channel, data) {
    const response = await fetch(`${this.httpUrl}/api/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel, data }),
    });
    const body = await response.json();
    if (!response.ok || typeof body.offset !== "number") {
      throw new Error(`POST /api/publish: HTTP ${response.status} ${JSON.stringify(body)}`);
    }
    return body.offset;
  }
}

/**
 * A TCP forwarder standing for a load balancer: new connections go to `target` (a port),
 * which `retarget` changes; open ones stay where they are. `cut` destroys the open ones (a
 * network failure, no close frame); after `hold`, new connections wait, unanswered, until
 * `release` forwards them (a client kept away for a while, without its reconnect backoff).
 */
export class Balancer {
  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.held = undefined;
    this.server = net.createServer((client) => {
      if (this.held !== undefined) {
        this.held.push(client);
        client.on("error", () => client.destroy());
        return;
      }
      this.#forward(client);
    });
  }

  #forward(client) {
    if (client.destroyed) return;
    const upstream = net.connect(this.target, "127.0.0.1");
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ]) {
      this.sockets.add(from);
      from.pipe(to);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.sockets.delete(from);
        to.destroy();
      });
    }
  }

  static async start(target) {
    const balancer = new Balancer(target);
    await new Promise((resolve) => balancer.server.listen(0, "127.0.0.1", resolve));
    balancer.port = balancer.server.address().port;
    return balancer;
  }

  retarget(target) {
    this.target = target;
  }

  /** Destroys every open connection, both ways. */
  cut() {
    for (const socket of this.sockets) socket.destroy();
  }

  /** New connections wait from now on. */
  hold() {
    this.held ??= [];
  }

  /** Forwards the connections that waited, and new ones again. */
  release() {
    const held = this.held ?? [];
    this.held = undefined;
    for (const client of held) this.#forward(client);
  }

  async close() {
    for (const socket of [...this.sockets, ...(this.held ?? [])]) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** A real `redis-server` on a free port of 127.0.0.1, without persistence. */
export class RedisServer {
  constructor(child, port) {
    this.child = child;
    this.port = port;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start() {
    const bin = process.env.REDIS_SERVER ?? "redis-server";
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const child = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.add(child);
      child.once("exit", () => children.delete(child));
      const ready = await new Promise((resolve) => {
        let log = "";
        const timer = setTimeout(() => resolve(false), 10_000);
        child.stdout.on("data", (chunk) => {
          log += chunk.toString();
          if (log.includes("Ready to accept connections")) {
            clearTimeout(timer);
            resolve(true);
          }
        });
        child.once("exit", () => {
          clearTimeout(timer);
          resolve(false);
        });
        child.once("error", () => {
          clearTimeout(timer);
          resolve(false);
        });
      });
      if (ready) return new RedisServer(child, port);
      child.kill("SIGKILL");
      // The free port was taken meanwhile: try another.
      if (attempt >= 5) throw new Error(`${bin} did not start (is redis-server installed?)`);
    }
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await withTimeout(exited, 10_000, "redis-server to exit");
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(address.port));
    });
  });
}

/** Rejects with a clear message when `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Checks `condition` (async) every `everyMs` (20) until it holds, within `ms`. */
export async function waitUntil(condition, what, ms = 5_000, everyMs = 20) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The next `event` on a pusher-js emitter (a channel, the connection, `client.user`). */
export function next(emitter, event, what = event, ms = 5_000) {
  return withTimeout(
    new Promise((resolve) => {
      const handler = (data) => {
        emitter.unbind(event, handler);
        resolve(data);
      };
      emitter.bind(event, handler);
    }),
    ms,
    what,
  );
}

/** Collects values and lets a test wait until it has `n` of them. */
export class Collector {
  items = [];
  #waiters = [];

  push = (item) => {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (this.items.length >= waiter.n) {
        waiter.resolve();
        return false;
      }
      return true;
    });
  };

  async waitFor(n, what = `${n} items`, ms = 5_000) {
    if (this.items.length < n) {
      await withTimeout(new Promise((resolve) => this.#waiters.push({ n, resolve })), ms, `${what} (have ${this.items.length})`);
    }
    return this.items;
  }
}

/** A pusher-js client of `server`, connected (its socket id known). */
export async function connect(server, extra = {}) {
  const client = new Pusher(APP.key, server.clientOptions(extra));
  if (client.connection.state !== "connected") {
    await next(client.connection, "connected", "pusher-js to connect");
  }
  return client;
}

/** Subscribes `client` to `name` and waits for `pusher:subscription_succeeded`. */
export async function subscribe(client, name) {
  const channel = client.subscribe(name);
  const data = await withTimeout(
    new Promise((resolve, reject) => {
      channel.bind("pusher:subscription_succeeded", resolve);
      channel.bind("pusher:subscription_error", (error) => reject(new Error(`subscription_error on ${name}: ${JSON.stringify(error)}`)));
    }),
    5_000,
    `the subscription to ${name}`,
  );
  return { channel, data };
}

/** Disconnects a pusher-js client and waits until its socket is closed. */
export async function disconnect(client) {
  if (client.connection.state === "disconnected") return;
  const closed = next(client.connection, "disconnected", "pusher-js to disconnect");
  client.disconnect();
  await closed;
}

async function readBody(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

/**
 * The app's side of a Laravel-like deployment, written with the `pusher` server SDK, on a
 * free port:
 * - `POST /pusher/auth` (pusher-js's channel authorization; also Echo's
 *   `/broadcasting/auth`): `authorizeChannel`, with presence data from the `user_id` and
 *   `user_name` parameters (`numeric=1`: the id as a number); `bad=1` signs with a wrong
 *   secret; `private-encrypted-` channels get their `shared_secret`.
 * - `POST /pusher/user-auth`: `authenticateUser` for `pusher.signin()`, `user_id` parameter.
 * - `POST /broadcast`: triggers `{channel, event, data}` with the SDK, excluding the socket in
 *   `X-Socket-ID` as Laravel's `broadcast(...)->toOthers()` does.
 * Every request's body and headers are kept in `requests`.
 */
export async function startApp(server) {
  const sdk = server.sdk();
  const wrong = server.sdk("not-the-app-secret");
  const requests = [];
  const httpServer = http.createServer(async (request, response) => {
    const body = await readBody(request);
    requests.push({ url: request.url, headers: request.headers, body });
    const reply = (status, value) => {
      response.writeHead(status, {
        "content-type": "application/json",
        "access-control-allow-origin": "*",
        "access-control-allow-headers": "*",
      });
      response.end(JSON.stringify(value));
    };
    if (request.method === "OPTIONS") return reply(204, {});
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    try {
      if (path === "/pusher/auth" || path === "/broadcasting/auth") {
        const params = new URLSearchParams(body);
        const socketId = params.get("socket_id") ?? "";
        const channel = params.get("channel_name") ?? "";
        const signer = params.get("bad") === "1" ? wrong : sdk;
        // Laravel's user ids are numbers: `numeric=1` sends the user id as one.
        const userId = params.get("user_id") ?? "anonymous";
        const presence = channel.startsWith("presence-")
          ? { user_id: params.get("numeric") === "1" ? Number(userId) : userId, user_info: { name: params.get("user_name") ?? "" } }
          : undefined;
        return reply(200, signer.authorizeChannel(socketId, channel, presence));
      }
      if (path === "/pusher/user-auth") {
        const params = new URLSearchParams(body);
        const socketId = params.get("socket_id") ?? "";
        return reply(200, sdk.authenticateUser(socketId, { id: params.get("user_id") ?? "anonymous" }));
      }
      if (path === "/broadcast") {
        const { channel, event, data } = JSON.parse(body);
        const socketId = request.headers["x-socket-id"];
        await sdk.trigger(channel, event, data, typeof socketId === "string" ? { socket_id: socketId } : {});
        return reply(200, {});
      }
      reply(404, { error: "not found" });
    } catch (error) {
      reply(500, { error: String(error) });
    }
  });
  await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
  const { port } = httpServer.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      const closed = new Promise((resolve) => httpServer.close(resolve));
      httpServer.closeAllConnections();
      await closed;
    },
  };
}

/**
 * A webhook receiver on a free port: keeps each POST's headers and raw body; `events` holds
 * the events of the batches the `pusher` SDK's `webhook(request).isValid()` accepted, and
 * `invalid` counts the others.
 */
export async function startWebhookReceiver() {
  const sdk = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret });
  const events = new Collector();
  const receiver = { events, invalid: 0, batches: [], url: "", close: async () => {} };
  const httpServer = http.createServer(async (request, response) => {
    const rawBody = await readBody(request);
    const webhook = sdk.webhook({ headers: request.headers, rawBody });
    receiver.batches.push({ headers: request.headers, rawBody });
    if (webhook.isValid()) {
      for (const event of webhook.getEvents()) events.push({ ...event, time: webhook.getTime() });
    } else {
      receiver.invalid += 1;
    }
    response.writeHead(200).end();
  });
  await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
  receiver.url = `http://127.0.0.1:${httpServer.address().port}/pusher/webhook`;
  receiver.close = async () => {
    const closed = new Promise((resolve) => httpServer.close(resolve));
    httpServer.closeAllConnections();
    await closed;
  };
  return receiver;
}

/** The Chromium to drive: `$CHROMIUM`, else the first of the usual names on PATH. */
export function findChromium() {
  const fromEnv = process.env.CHROMIUM;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
      const candidate = path.join(dir, name);
      try {
        accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}
