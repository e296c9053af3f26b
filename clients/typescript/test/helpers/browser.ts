// A real headless Chromium driven over the Chrome DevTools Protocol: just enough of it to open
// a page and evaluate code in it (`Target.createTarget`, `Runtime.evaluate`).
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import WebSocket from "ws";

import { withTimeout } from "./server.js";

/** The Chromium to run: `$CHROMIUM`, else the first of the usual names found on `PATH`. */
export function findChromium(): string | undefined {
  const fromEnv = process.env.CHROMIUM;
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    for (const name of names) {
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

interface Pending {
  resolve(result: Record<string, unknown>): void;
  reject(error: Error): void;
}

/** A running headless Chromium; `close()` kills it and removes its profile. */
export class Browser {
  readonly #child: ChildProcess;
  readonly #socket: WebSocket;
  readonly #profile: string;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  private constructor(child: ChildProcess, socket: WebSocket, profile: string) {
    this.#child = child;
    this.#socket = socket;
    this.#profile = profile;
    socket.on("message", (data) => {
      const reply = JSON.parse(data.toString()) as {
        id?: number;
        result?: Record<string, unknown>;
        error?: { message: string };
      };
      if (reply.id === undefined) return; // an event
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#pending.delete(reply.id);
      if (reply.error !== undefined) pending.reject(new Error(`CDP: ${reply.error.message}`));
      else pending.resolve(reply.result ?? {});
    });
    socket.on("close", () => {
      for (const pending of this.#pending.values()) pending.reject(new Error("the browser went away"));
      this.#pending.clear();
    });
  }

  /** Starts `chromium` headless and connects to its DevTools endpoint. */
  static async launch(executable: string): Promise<Browser> {
    const profile = mkdtempSync(path.join(tmpdir(), "wirehub-chromium-"));
    const child = spawn(
      executable,
      [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        // No calls home: the tests run on machines without outside network access.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    const endpoint = await withTimeout(
      new Promise<string>((resolve, reject) => {
        child.stderr?.on("data", (chunk: Buffer) => {
          log = (log + chunk.toString()).slice(-10_000);
          const match = log.match(/DevTools listening on (ws:\/\/\S+)/);
          if (match?.[1] !== undefined) resolve(match[1]);
        });
        child.once("exit", (code) => reject(new Error(`chromium exited with ${code}:\n${log}`)));
        child.once("error", reject);
      }),
      30_000,
      "chromium's DevTools endpoint",
    ).catch((error: unknown) => {
      child.kill("SIGKILL");
      rmSync(profile, { recursive: true, force: true });
      throw error;
    });
    const socket = new WebSocket(endpoint, { perMessageDeflate: false });
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once("open", () => resolve());
        socket.once("error", reject);
      }),
      10_000,
      "the DevTools connection",
    );
    return new Browser(child, socket, profile);
  }

  #send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const message = sessionId === undefined ? { id, method, params } : { id, method, params, sessionId };
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#socket.send(JSON.stringify(message));
    return withTimeout(reply, 30_000, `the reply to ${method}`);
  }

  /** Opens `url` in a new tab and waits until its document has loaded. */
  async open(url: string): Promise<Page> {
    const { targetId } = (await this.#send("Target.createTarget", { url: "about:blank" })) as { targetId: string };
    const { sessionId } = (await this.#send("Target.attachToTarget", { targetId, flatten: true })) as {
      sessionId: string;
    };
    const page = new Page(
      (method, params) => this.#send(method, params, sessionId),
      async () => {
        await this.#send("Target.closeTarget", { targetId });
      },
    );
    await page.navigate(url);
    return page;
  }

  async close(): Promise<void> {
    try {
      await this.#send("Browser.close");
    } catch {
      // already gone
    }
    this.#socket.close();
    const exited = new Promise<void>((resolve) => {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) resolve();
      else this.#child.once("exit", () => resolve());
    });
    await withTimeout(exited, 10_000, "chromium to exit").catch(() => this.#child.kill("SIGKILL"));
    rmSync(this.#profile, { recursive: true, force: true });
  }
}

type Send = (method: string, params?: Record<string, unknown>) => Promise<Record<string, unknown>>;

/** One tab. */
export class Page {
  readonly #send: Send;
  readonly #close: () => Promise<void>;

  constructor(send: Send, close: () => Promise<void>) {
    this.#send = send;
    this.#close = close;
  }

  /** Closes the tab, as a user does: its document and connections go away. */
  close(): Promise<void> {
    return this.#close();
  }

  /** Sends any DevTools Protocol command to this tab and returns its result. */
  command(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.#send(method, params);
  }

  /**
   * Takes the tab off the network or puts it back (DevTools' network emulation: `navigator.onLine`
   * changes, `offline`/`online` events fire, requests fail while offline).
   */
  async setOffline(offline: boolean): Promise<void> {
    await this.#send("Network.enable");
    await this.#send("Network.emulateNetworkConditions", {
      offline,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: -1,
    });
  }

  /** Loads `url` and waits until `document.readyState` is `complete`. */
  async navigate(url: string): Promise<void> {
    await this.#send("Page.navigate", { url });
    await this.waitFor("document.readyState === 'complete' && location.href !== 'about:blank'", "the page to load");
  }

  /**
   * Evaluates `expression` in the page (awaiting it if it is a promise) and returns its value,
   * which must be JSON-serializable. An exception in the page is thrown here with its text.
   */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const result = (await this.#send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    })) as {
      result?: { value?: unknown };
      exceptionDetails?: { text?: string; exception?: { description?: string } };
    };
    if (result.exceptionDetails !== undefined) {
      const details = result.exceptionDetails;
      throw new Error(`in the page: ${details.exception?.description ?? details.text ?? "an exception"}`);
    }
    return result.result?.value as T;
  }

  /** Polls `condition` (an expression) in the page every 20 ms until it is truthy, within `ms`. */
  async waitFor(condition: string, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      let ok = false;
      try {
        ok = Boolean(await this.evaluate(condition));
      } catch {
        // the page is between documents
      }
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
