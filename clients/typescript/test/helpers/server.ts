// Real processes for integration tests: the release `wirehub serve` on a free port, a TCP proxy
// that cuts links, a `redis-server`, and waits that time out with a clear message.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";

import type { ClientEvents, WirehubClient } from "../../src/index.js";

/** `target/release/wirehub` of this repository, or `$WIREHUB_BIN`. */
export function wirehubBin(): string {
  const fromEnv = process.env.WIREHUB_BIN;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  // .test-build/test/helpers/server.js → the repository root is five levels up.
  return fileURLToPath(new URL("../../../../../target/release/wirehub", import.meta.url));
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** A running `wirehub serve`. */
export class Server {
  readonly child: ChildProcess;
  readonly port: number;
  readonly args: readonly string[];
  #log: string;
  readonly #exited: Promise<number | null>;

  private constructor(child: ChildProcess, port: number, args: readonly string[], log: string, exited: Promise<number | null>) {
    this.child = child;
    this.port = port;
    this.args = args;
    this.#log = log;
    this.#exited = exited;
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#log = (this.#log + chunk.toString()).slice(-20_000);
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get log(): string {
    return this.#log;
  }

  /**
   * Starts `wirehub serve --listen 127.0.0.1:PORT --heartbeat-interval 1s ARGS` (PORT 0 picks a
   * free one) and waits for its `addr=` log line.
   */
  static async start(args: readonly string[] = [], port = 0): Promise<Server> {
    const bin = wirehubBin();
    if (!existsSync(bin)) {
      throw new Error(`${bin} not found: run \`cargo build --release -p wirehub\` or set WIREHUB_BIN`);
    }
    // A port just freed by a killed server may take a moment to be bound again.
    for (let attempt = 1; ; attempt++) {
      try {
        return await Server.#startOnce(bin, args, port);
      } catch (error) {
        if (port === 0 || attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  static #startOnce(bin: string, args: readonly string[], port: number): Promise<Server> {
    const fullArgs = ["serve", "--listen", `127.0.0.1:${port}`, "--heartbeat-interval", "1s", "--log-format", "text", ...args];
    const child = spawn(bin, fullArgs, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
    });
    children.add(child);
    const exited = new Promise<number | null>((resolve) => {
      child.once("exit", (code) => {
        children.delete(child);
        resolve(code);
      });
    });
    return new Promise<Server>((resolve, reject) => {
      let log = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`wirehub did not log its address within 10 s:\n${log}`));
      }, 10_000);
      const onData = (chunk: Buffer): void => {
        log += chunk.toString();
        const match = log.match(/addr=127\.0\.0\.1:(\d+)/);
        if (match?.[1] !== undefined) {
          clearTimeout(timer);
          child.stderr?.off("data", onData);
          child.off("exit", onExit);
          resolve(new Server(child, Number(match[1]), args, log, exited));
        }
      };
      const onExit = (code: number | null): void => {
        clearTimeout(timer);
        reject(new Error(`wirehub exited with ${code} before listening:\n${log}`));
      };
      child.stderr?.on("data", onData);
      child.once("exit", onExit);
    });
  }

  /** Sends `signal` and waits (at most 10 s) for the process to exit. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    await withTimeout(this.#exited, 10_000, `wirehub to exit after ${signal}`).catch((error: unknown) => {
      this.child.kill("SIGKILL");
      throw error;
    });
  }

  /** Starts the same server again on the same port. */
  restart(): Promise<Server> {
    return Server.start(this.args, this.port);
  }

  /** Reads one Prometheus counter from `/metrics` (0 when absent). */
  async metric(name: string): Promise<number> {
    const response = await fetch(`${this.httpUrl}/metrics`);
    const text = await response.text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? 0 : Number(line.split(" ").pop());
  }
}

/** Runs `wirehub token ...` and returns the token. */
export function makeToken(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(wirehubBin(), ["token", ...args], { timeout: 10_000 }, (error, stdout) => {
      if (error) reject(error);
      else resolve(stdout.trim());
    });
  });
}

/** Rejects with a clear message when `promise` does not settle within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next `event` of `client` that satisfies `predicate`, within `ms`. */
export function nextEvent<K extends keyof ClientEvents>(
  client: WirehubClient,
  event: K,
  predicate: (payload: ClientEvents[K]) => boolean = () => true,
  ms = 10_000,
): Promise<ClientEvents[K]> {
  let off: (() => void) | undefined;
  const promise = new Promise<ClientEvents[K]>((resolve) => {
    off = client.on(event, (payload) => {
      if (predicate(payload)) resolve(payload);
    });
  });
  return withTimeout(promise, ms, `the client's ${String(event)} event`).finally(() => off?.());
}

/** Collects values and lets a test wait until it has `n` of them. */
export class Collector<T> {
  readonly items: T[] = [];
  #waiters: { n: number; resolve: () => void }[] = [];

  push = (item: T): void => {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (this.items.length >= waiter.n) {
        waiter.resolve();
        return false;
      }
      return true;
    });
  };

  /** Resolves once `n` items arrived (within `ms`). */
  async waitFor(n: number, ms = 10_000): Promise<T[]> {
    if (this.items.length < n) {
      await withTimeout(
        new Promise<void>((resolve) => this.#waiters.push({ n, resolve })),
        ms,
        `${n} items (have ${this.items.length})`,
      );
    }
    return this.items;
  }
}

/**
 * A TCP proxy in front of the server, so a test can cut the network: `cut()` drops every
 * connection and refuses new ones until `restore()`; `freeze()` stops forwarding (and hides
 * closes) without closing anything, like a dead peer.
 */
export class TcpProxy {
  readonly #server: net.Server;
  readonly #pairs = new Set<[net.Socket, net.Socket]>();
  #mode: "pass" | "refuse" | "freeze" | "oneway" = "pass";
  readonly target: number;
  port = 0;

  private constructor(target: number) {
    this.target = target;
    this.#server = net.createServer((client) => this.#accept(client));
  }

  static async start(target: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(target);
    await new Promise<void>((resolve) => proxy.#server.listen(0, "127.0.0.1", resolve));
    const address = proxy.#server.address();
    if (address === null || typeof address === "string") throw new Error("no proxy address");
    proxy.port = address.port;
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  #accept(client: net.Socket): void {
    if (this.#mode !== "pass") {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target, "127.0.0.1");
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.#pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on("data", (chunk) => {
        if (this.#mode === "freeze") return;
        if (this.#mode === "oneway" && from === upstream) return;
        to.write(chunk);
      });
      from.on("close", () => {
        if (this.#mode === "freeze" || this.#mode === "oneway") return;
        to.destroy();
        this.#pairs.delete(pair);
      });
      from.on("error", () => {});
    };
    forward(client, upstream);
    forward(upstream, client);
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    this.#mode = "refuse";
    this.#dropAll();
  }

  /** Stops forwarding without closing anything: the peers see silence. */
  freeze(): void {
    this.#mode = "freeze";
  }

  /**
   * Forwards what clients send but nothing the server sends back (acks, pongs…), and hides
   * closes: requests arrive, answers are lost.
   */
  freezeDownstream(): void {
    this.#mode = "oneway";
  }

  /** Accepts and forwards again (frozen connections are dropped). */
  restore(): void {
    if (this.#mode === "freeze" || this.#mode === "oneway") this.#dropAll();
    this.#mode = "pass";
  }

  #dropAll(): void {
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
  }

  async close(): Promise<void> {
    this.#dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A real `redis-server` on a free port of 127.0.0.1, without persistence; `stop()` kills it. */
export class RedisServer {
  readonly child: ChildProcess;
  readonly port: number;

  private constructor(child: ChildProcess, port: number) {
    this.child = child;
    this.port = port;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts `redis-server` (or `$REDIS_SERVER`) and waits until it accepts connections. */
  static async start(): Promise<RedisServer> {
    const bin = process.env.REDIS_SERVER ?? "redis-server";
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const child = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.add(child);
      child.once("exit", () => children.delete(child));
      const ready = await new Promise<boolean>((resolve) => {
        let log = "";
        const timer = setTimeout(() => resolve(false), 10_000);
        child.stdout?.on("data", (chunk: Buffer) => {
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

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGKILL");
    await withTimeout(exited, 10_000, "redis-server to exit");
  }
}

/** A port of 127.0.0.1 that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => {
        if (address === null || typeof address === "string") reject(new Error("no address"));
        else resolve(address.port);
      });
    });
  });
}

/** `POST /api/publish` on `server`: the offset the server gave the message. */
export async function publishHttp(server: Server, channel: string, data: unknown): Promise<number> {
  const response = await fetch(`${server.httpUrl}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const body = (await response.json()) as { offset?: unknown };
  if (!response.ok || typeof body.offset !== "number") {
    throw new Error(`POST /api/publish: HTTP ${response.status} ${JSON.stringify(body)}`);
  }
  return body.offset;
}
