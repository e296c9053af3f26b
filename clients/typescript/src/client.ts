/**
 * The client: the public API and the connection loop. One WebSocket connection at a time,
 * re-established with jittered backoff.
 *
 * The parts live apart: `connector.ts` opens sockets and classifies how they end,
 * `registry.ts` holds what outlives a connection (the subscriptions with the last position
 * handed to each, the buffer of publishes made while disconnected), and this file runs one
 * connection at a time over them. State of one connection lives in a {@link Conn}: requests
 * awaiting an answer, whether `welcome` arrived, whether the connection proved healthy, its
 * timers.
 *
 * Every socket callback checks that its connection is still the current one, so a socket that
 * was given up (dead server, connect timeout) can never disturb the next connection.
 */

import { ReconnectSchedule, type ReconnectAdvice, backoffDelay } from "./backoff.js";
import {
  checkUrl,
  classifyClose,
  classifyRefusal,
  describeSocketError,
  onServerPing,
  openSocket,
  terminate,
  upgradeUrl,
} from "./connector.js";
import { WirehubError } from "./errors.js";
import { type ClientOptions, type Settings, resolveSettings } from "./options.js";
import {
  type Clock,
  type NetworkEvents,
  OPEN,
  type WebSocketConstructor,
  type WebSocketLike,
  globalNetworkEvents,
  globalWebSocket,
  reportListenerError,
  systemClock,
} from "./platform.js";
import {
  type Member,
  type ServerMessage,
  type StreamPosition,
  isValidChannel,
  isValidIdempotencyKey,
  parseServerMessage,
} from "./protocol.js";
import {
  type HeldPublish,
  type Registration,
  Registry,
  type Request,
  type ResyncCause,
} from "./registry.js";
import { type Message, Subscription, type SubscriptionHandlers } from "./subscription.js";

export type { ClientOptions } from "./options.js";

/** The connection state. */
export type ClientState =
  /** Constructed; `connect()` not called yet. */
  | "idle"
  /** An attempt is under way (socket opening, or waiting for `welcome`). */
  | "connecting"
  /** `welcome` arrived: requests are sent at once. */
  | "connected"
  /** Waiting for the backoff delay before the next attempt. */
  | "reconnecting"
  /** Stopped for good: `close()` was called or the server refused the client. */
  | "closed";

/** The events of {@link WirehubClient.on} and their payloads. */
export interface ClientEvents {
  state: { state: ClientState; previous: ClientState };
  connecting: { attempt: number };
  connected: { session: string };
  disconnected: { code: number | undefined; reason: string };
  reconnecting: { attempt: number; delay: number };
  recoveryFailed: { channel: string; since: StreamPosition; position: StreamPosition };
  /**
   * A subscription was restored after a reconnect (or caught up) with `since` and nothing was
   * lost: the server replays what it missed, from `since` up to `position` (the stream's
   * position when the server answered), and the live messages follow. The counterpart of
   * `recoveryFailed`, for applications that show the outcome of a recovery.
   */
  recovered: { channel: string; since: StreamPosition; position: StreamPosition };
  /**
   * A subscription catches up from the server's history, from `since` (the last position it
   * was handed): its consumer fell behind (`slow_consumer`: its queue was full) or the server
   * skipped publications for it (`gap`). Nothing is lost while history covers `since`;
   * otherwise `recoveryFailed` follows.
   */
  resync: { channel: string; since: StreamPosition; cause: ResyncCause };
  subscriptionEnded: { channel: string; error: WirehubError };
  /**
   * The server refused a subscription's restoring or catching-up `subscribe` for a passing
   * reason (`error.code` `internal`, e.g. its broker is unavailable, or `rate_limited`): the
   * subscription stays and the same `subscribe` is sent again in `delay` ms (`attempt` counts
   * the consecutive refusals). Its consumer sees only the delay.
   */
  subscribeRetry: { channel: string; error: WirehubError; attempt: number; delay: number };
  /**
   * A member joined a presence channel this client is subscribed to (the client's own join
   * too, after its `subscribed`).
   */
  join: { channel: string; member: Member };
  /** A member left a presence channel this client is subscribed to. */
  leave: { channel: string; member: Member };
  error: WirehubError;
  stopped: { error: WirehubError | undefined };
}

/** The members of a presence channel ({@link WirehubClient.presence}). */
export interface Presence {
  readonly channel: string;
  /** How many members the channel has (exact, also when the list is truncated). */
  readonly count: number;
  /** At most the server's `presence_max_members` of them. */
  readonly members: readonly Member[];
  /** Whether `members` lists fewer than `count`. */
  readonly truncated: boolean;
}

type Listener<K extends keyof ClientEvents> = (payload: ClientEvents[K]) => void;

type Pending =
  | { kind: "subscribe"; channel: string; restoring: boolean }
  | { kind: "unsubscribe"; request: Request<void> | undefined }
  | { kind: "publish"; publish: HeldPublish }
  | { kind: "refresh"; request: Request<void> }
  | { kind: "presence"; request: Request<Presence> }
  | { kind: "ping" };

/** The state of one connection attempt / established connection. */
interface Conn {
  readonly ws: WebSocketLike;
  opened: boolean;
  /** Whether `welcome` arrived. */
  ready: boolean;
  healthy: boolean;
  readonly pending: Map<number, Pending>;
  /** Resubscriptions sent at `welcome` and not answered yet. */
  restoring: number;
  lastReceived: number;
  /** Set when an app-level ping was sent: the connection is dead if nothing arrives by then. */
  pingDeadline: number | undefined;
  /** What the socket's `error` event said (Node's `ws` names the HTTP status there). */
  lastError: string | undefined;
  connectTimer: unknown;
  idleTimer: unknown;
  healthTimer: unknown;
}

/** 128 random bits as 32 hex digits (Web Crypto where there is one: browsers, Node 20). */
function idempotencyKey(): string {
  const bytes = new Uint8Array(16);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (array: Uint8Array) => Uint8Array } }).crypto;
  if (typeof crypto?.getRandomValues === "function") {
    crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

const closedError = (): WirehubError => new WirehubError("closed", "the client is closed");
const timeoutError = (): WirehubError => new WirehubError("timeout", "the request timed out");

/**
 * A wirehub client. Reconnects with jittered exponential backoff, resubscribes every channel
 * with the last position it saw so that the server replays what was missed, and says so
 * (`recoveryFailed`) when something could not be recovered.
 *
 * ```ts
 * const client = new WirehubClient("wss://example.com/ws", { token });
 * await client.connect();
 * const chat = await client.subscribe("chat", (m) => console.log(m.offset, m.data));
 * const offset = await client.publish("chat", { text: "hi" });
 * ```
 */
export class WirehubClient {
  /** The WebSocket URL (without the token). */
  readonly url: string;
  readonly #settings: Settings;
  readonly #WebSocket: WebSocketConstructor;
  readonly #clock: Clock;
  readonly #schedule: ReconnectSchedule;
  readonly #random: () => number;
  readonly #listeners = new Map<keyof ClientEvents, Set<Listener<any>>>();

  #state: ClientState = "idle";
  #conn: Conn | undefined;
  #reconnectTimer: unknown;
  /** Connection attempts since the last healthy connection. */
  #attempts = 0;
  #nextId = 1;
  #session: string | undefined;
  readonly #registry = new Registry({
    recoveryFailed: (payload) => this.#emit("recoveryFailed", payload),
    recovered: (payload) => this.#emit("recovered", payload),
    subscriptionEnded: (payload) => this.#emit("subscriptionEnded", payload),
    resync: (registration, cause) => this.#resync(registration, cause),
    retry: (registration, error) => this.#retrySubscribe(registration, error),
  });
  #connectWaiters: Request<void>[] = [];
  /** `presence` requests made while no connection was ready: sent at the next `welcome`. */
  #presenceWaiting: { channel: string; request: Request<Presence> }[] = [];
  #stopped = false;
  #stopError: WirehubError | undefined;
  readonly #network: NetworkEvents | undefined;
  readonly #onNetworkChange = (): void => this.#networkChanged();
  #listeningToNetwork = false;

  /**
   * Checks the URL and options; does not connect yet (see {@link connect}).
   * @throws {WirehubError} `invalid_url` for anything but a `ws://` or `wss://` URL.
   * @throws {TypeError} for invalid options, or when no WebSocket implementation is available.
   */
  constructor(url: string, options: ClientOptions = {}) {
    checkUrl(url);
    this.url = url;
    const WebSocketClass = options.WebSocket ?? globalWebSocket();
    if (WebSocketClass === undefined) {
      throw new TypeError(
        "wirehub: no global WebSocket here; pass one, e.g. new WirehubClient(url, { WebSocket }) with `import WebSocket from \"ws\"`",
      );
    }
    this.#WebSocket = WebSocketClass;
    this.#settings = resolveSettings(options);
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#schedule = new ReconnectSchedule(this.#settings.backoff, this.#random);
    this.#network = options.network === null ? undefined : (options.network ?? globalNetworkEvents());
  }

  // ---- public API ------------------------------------------------------------------------

  /** The connection state. */
  get state(): ClientState {
    return this.#state;
  }

  /** The session id from the current connection's `welcome`, while connected. */
  get session(): string | undefined {
    return this.#state === "connected" ? this.#session : undefined;
  }

  /** The error that stopped the client, if one did. */
  get stopError(): WirehubError | undefined {
    return this.#stopError;
  }

  /**
   * Starts connecting (once; later calls only wait). Resolves when the client is connected
   * (`welcome` received); rejects with the error that stopped the client if it stops first
   * (e.g. HTTP 401, close 4001, `close()`). Reconnecting after a failed attempt is automatic:
   * the promise stays pending meanwhile.
   */
  connect(): Promise<void> {
    const promise = new Promise<void>((resolve, reject) => {
      if (this.#stopped) {
        reject(this.#stopError ?? closedError());
      } else if (this.#state === "connected") {
        resolve();
      } else {
        this.#connectWaiters.push(this.#request(resolve, reject, undefined, false));
      }
    });
    // Not awaiting the promise must not turn a stop into an unhandled rejection.
    promise.catch(() => {});
    if (this.#state === "idle" && !this.#stopped) {
      if (this.#network !== undefined && !this.#listeningToNetwork) {
        this.#listeningToNetwork = true;
        this.#network.addEventListener("online", this.#onNetworkChange);
        this.#network.addEventListener("offline", this.#onNetworkChange);
      }
      this.#attempt();
    }
    return promise;
  }

  /**
   * Subscribes to `channel`. Resolves once the server confirmed (while disconnected: once the
   * next connection did). One subscription per channel per client.
   *
   * Every message reaches the handlers and the async iterator in offset order, or a
   * `recoveryFailed` event stands where messages were lost: a consumer that falls behind
   * (more than `subscriptionBuffer` events waiting) is caught up from the server's history,
   * never dropped in silence. A callback that returns a promise holds the next event until
   * it settles.
   *
   * Rejects with the server's error when it refuses this first `subscribe`, including for a
   * passing reason (`internal` while its broker is unavailable, `rate_limited`): the caller
   * decides whether to try again. Once subscribed, a subscription that the server refuses for
   * a passing reason while it is restored after a reconnect or caught up is kept and retried
   * (see the `subscribeBackoff` option and the `subscribeRetry` event); other refusals end it
   * (`subscriptionEnded`).
   *
   * @param handlers a message callback, or callbacks for messages, recovery failures and the end.
   */
  subscribe<T = unknown>(
    channel: string,
    handlers?: ((message: Message<T>) => unknown) | SubscriptionHandlers<T>,
  ): Promise<Subscription<T>> {
    const given: SubscriptionHandlers<T> =
      typeof handlers === "function" ? { onMessage: handlers } : { ...handlers };
    return new Promise<Subscription<T>>((resolve, reject) => {
      if (this.#stopped) return reject(this.#stopError ?? closedError());
      if (!isValidChannel(channel)) {
        return reject(
          new WirehubError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`, {
            channel,
          }),
        );
      }
      if (this.#registry.has(channel)) {
        return reject(
          new WirehubError("already_subscribed", `already subscribed to ${JSON.stringify(channel)}`, {
            channel,
          }),
        );
      }
      const subscription: Subscription<T> = new Subscription<T>(
        channel,
        {
          unsubscribe: () => this.#unsubscribe(channel, subscription),
          position: () => this.#registry.positionOf(channel, subscription),
          drained: () => this.#registry.drained(channel, subscription),
        },
        given,
        this.#settings.subscriptionBuffer,
      );
      const registration = this.#registry.add(channel, subscription);
      registration.waiting = this.#request(resolve, reject, () =>
        this.#subscribeTimedOut(registration),
      );
      const conn = this.#conn;
      if (conn?.ready) {
        this.#sendSubscribe(conn, registration, false);
      }
    });
  }

  /** Ends the subscription to `channel` (no-op when there is none). */
  unsubscribe(channel: string): Promise<void> {
    const registration = this.#registry.get(channel);
    return registration === undefined
      ? Promise.resolve()
      : this.#unsubscribe(channel, registration.subscription);
  }

  /**
   * Publishes `data` (any JSON value) and resolves with the offset the server gave it (its
   * `ack`). While disconnected the publish waits in a bounded buffer and is sent, in order,
   * on the next connection; when the buffer is full it fails at once with `buffer_full`.
   * A publish whose ack was lost with the connection is sent again after the reconnect with
   * the same idempotency key, so it is published once (see `retryPublishes`).
   *
   * `options.idempotencyKey` replaces the random key with one of your choosing (e.g. an order
   * id): publishing again with it, from anywhere, resolves with the first message's offset
   * instead of publishing twice, while that message is in the channel's history.
   */
  publish(channel: string, data: unknown, options: { idempotencyKey?: string } = {}): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.#stopped) return reject(this.#stopError ?? closedError());
      const chosenKey = options.idempotencyKey;
      if (chosenKey !== undefined && !isValidIdempotencyKey(chosenKey)) {
        return reject(
          new WirehubError(
            "invalid_idempotency_key",
            "an idempotency key is 1 to 64 visible ASCII characters (no spaces)",
          ),
        );
      }
      if (!isValidChannel(channel)) {
        return reject(
          new WirehubError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`, {
            channel,
          }),
        );
      }
      let json: string | undefined;
      try {
        json = JSON.stringify(data);
      } catch (error) {
        return reject(
          new WirehubError("invalid_data", `the data cannot be serialized to JSON: ${String(error)}`),
        );
      }
      if (json === undefined) {
        return reject(new WirehubError("invalid_data", "the data is not a JSON value"));
      }
      const conn = this.#conn;
      if (!conn?.ready && this.#registry.heldCount >= this.#settings.publishBuffer) {
        const capacity = this.#settings.publishBuffer;
        return reject(
          new WirehubError(
            "buffer_full",
            `the publish buffer is full (${capacity} publishes waiting for the connection)`,
            { capacity },
          ),
        );
      }
      const publish: HeldPublish = {
        channel,
        json,
        key: chosenKey ?? (this.#settings.retryPublishes ? idempotencyKey() : undefined),
        id: undefined,
        request: this.#request(resolve, reject, () => this.#publishTimedOut(publish)),
      };
      if (conn?.ready) {
        this.#sendPublish(conn, publish);
      } else {
        this.#registry.hold(publish);
      }
    });
  }

  /**
   * Replaces the token: used for every later upgrade, and sent as `refresh` on the live
   * connection (resolves on `refreshed`; rejects with the server's `unauthorized` or
   * `forbidden`). While disconnected it resolves at once.
   */
  refreshToken(token: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.#stopped) return reject(this.#stopError ?? closedError());
      this.#settings.token = token;
      const conn = this.#conn;
      if (!conn?.ready) return resolve();
      const id = this.#id();
      const request = this.#request(resolve, reject, () => conn.pending.delete(id));
      conn.pending.set(id, { kind: "refresh", request });
      this.#send(conn, JSON.stringify({ type: "refresh", id, token }));
    });
  }

  /**
   * The members of a presence channel (one whose `[[channels]]` table on the server says
   * `presence = true`). The token must allow subscribing to the channel; no subscription is
   * needed. Changes arrive as `join` and `leave` events while the client is subscribed to
   * the channel: subscribe first, then read, then apply the events keyed by
   * `member.client`. Asked while disconnected, it is sent with the next connection (within
   * `requestTimeout`). Rejects with `presence_disabled`, `forbidden`, `invalid_channel`,
   * `disconnected` (the connection was lost before the answer), `timeout` or `closed`.
   */
  presence(channel: string): Promise<Presence> {
    return new Promise<Presence>((resolve, reject) => {
      if (this.#stopped) return reject(this.#stopError ?? closedError());
      if (!isValidChannel(channel)) {
        return reject(
          new WirehubError("invalid_channel", `invalid channel name ${JSON.stringify(channel)}`, {
            channel,
          }),
        );
      }
      const request = this.#request(resolve, reject, () => {
        this.#presenceWaiting = this.#presenceWaiting.filter((waiting) => waiting.request !== request);
      });
      const conn = this.#conn;
      if (conn?.ready) {
        this.#sendPresence(conn, channel, request);
      } else {
        this.#presenceWaiting.push({ channel, request });
      }
    });
  }

  /** Subscribes a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener. */
  off<K extends keyof ClientEvents>(event: K, listener: Listener<K>): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * Stops the client: sends close 1000, fails waiting calls with `closed`, ends every
   * subscription. Resolves once the socket is closed (at most `pongTimeout` later).
   */
  close(): Promise<void> {
    const conn = this.#conn;
    const open = conn !== undefined && conn.ws.readyState === OPEN;
    this.#stop(undefined);
    if (conn === undefined || !open) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = this.#clock.setTimeout(() => {
        terminate(conn.ws);
        resolve();
      }, this.#settings.pongTimeout);
      conn.ws.onclose = () => {
        this.#clock.clearTimeout(timer);
        resolve();
      };
    });
  }

  // ---- connection lifecycle ----------------------------------------------------------------

  #attempt(): void {
    this.#reconnectTimer = undefined;
    this.#attempts += 1;
    this.#setState("connecting");
    this.#emit("connecting", { attempt: this.#attempts });
    if (this.#stopped) return;
    const opened = openSocket(this.#WebSocket, upgradeUrl(this.url, this.#settings.token));
    if ("error" in opened) {
      this.#emit("error", opened.error);
      this.#afterLoss("backoff", opened.error);
      return;
    }
    const ws = opened.ws;
    const now = this.#clock.now();
    const conn: Conn = {
      ws,
      opened: false,
      ready: false,
      healthy: false,
      pending: new Map(),
      restoring: 0,
      lastReceived: now,
      pingDeadline: undefined,
      lastError: undefined,
      connectTimer: undefined,
      idleTimer: undefined,
      healthTimer: undefined,
    };
    this.#conn = conn;
    conn.connectTimer = this.#clock.setTimeout(() => {
      if (this.#conn !== conn) return;
      this.#connectFailed(conn, `no welcome within ${this.#settings.connectTimeout} ms`);
    }, this.#settings.connectTimeout);
    ws.onopen = () => {
      if (this.#conn !== conn) return;
      conn.opened = true;
      conn.lastReceived = this.#clock.now();
      this.#armIdle(conn, conn.lastReceived + this.#settings.idleTimeout);
      conn.healthTimer = this.#clock.setTimeout(() => {
        if (this.#conn === conn) this.#markHealthy(conn);
      }, this.#settings.healthyAfter);
    };
    ws.onmessage = (event: { data?: unknown }) => {
      if (this.#conn !== conn) return;
      this.#alive(conn);
      this.#onFrame(conn, event?.data);
    };
    ws.onerror = (event: unknown) => {
      if (this.#conn !== conn) return;
      conn.lastError = describeSocketError(event) ?? conn.lastError;
      // Browsers follow an error with a close event, but not every implementation does
      // before the socket opened: a failed upgrade ends the attempt here.
      if (!conn.opened) this.#onSocketClosed(conn, 1006, "");
    };
    ws.onclose = (event: { code?: unknown; reason?: unknown }) => {
      if (this.#conn !== conn) return;
      const code = typeof event?.code === "number" ? event.code : 1006;
      const reason = typeof event?.reason === "string" ? event.reason : "";
      this.#onSocketClosed(conn, code, reason);
    };
    // Node's `ws` shows the server's WebSocket pings: they prove the server alive too.
    onServerPing(ws, () => {
      if (this.#conn === conn) this.#alive(conn);
    });
  }

  #onSocketClosed(conn: Conn, code: number, reason: string): void {
    if (!conn.opened) {
      // The upgrade failed.
      const refusal = classifyRefusal(conn.lastError, code);
      if ("stop" in refusal) {
        this.#endConnection(conn, undefined);
        terminate(conn.ws);
        this.#stop(refusal.stop);
        return;
      }
      this.#connectFailed(conn, refusal.retry);
      return;
    }
    const closing = classifyClose(code, reason);
    if ("stop" in closing) {
      this.#endConnection(conn, closing.stop);
      this.#stop(closing.stop);
      return;
    }
    this.#lost(conn, code, reason || conn.lastError || "", closing.advice);
  }

  /** An attempt that did not reach `welcome` (refused, HTTP error, timeout). */
  #connectFailed(conn: Conn, detail: string): void {
    this.#endConnection(conn, new WirehubError("disconnected", "the connection was lost"));
    terminate(conn.ws);
    const error = new WirehubError("connect_failed", `could not connect: ${detail}`);
    if (conn.opened) {
      this.#emit("disconnected", { code: undefined, reason: detail });
    }
    this.#emit("error", error);
    this.#afterLoss("backoff", error);
  }

  /** An established connection ended (closed by the server, or given up by the client). */
  #lost(conn: Conn, code: number | undefined, reason: string, advice: ReconnectAdvice): void {
    const error = new WirehubError("disconnected", "the connection was lost before the server answered", {
      ...(code === undefined ? {} : { closeCode: code }),
      reason,
    });
    this.#endConnection(conn, error);
    this.#emit("disconnected", { code, reason });
    this.#afterLoss(advice, error);
  }

  /** Schedules the next attempt, or stops when the reconnect limit is reached. */
  #afterLoss(advice: ReconnectAdvice, error: WirehubError): void {
    if (this.#stopped) return;
    const max = this.#settings.maxReconnects;
    if (max !== undefined && this.#schedule.retries >= max) {
      this.#stop(error);
      return;
    }
    const delay = this.#schedule.nextDelay(advice);
    this.#reconnectTimer = this.#clock.setTimeout(() => this.#attempt(), delay);
    this.#setState("reconnecting");
    this.#emit("reconnecting", { attempt: this.#attempts + 1, delay });
  }

  /** Clears a connection's timers and settles what was in flight on it. */
  #endConnection(conn: Conn, error: WirehubError | undefined): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    this.#session = undefined;
    this.#clock.clearTimeout(conn.connectTimer);
    this.#clock.clearTimeout(conn.idleTimer);
    this.#clock.clearTimeout(conn.healthTimer);
    const failure = error ?? closedError();
    // Publishes whose ack was lost with the connection are held again, in the order they were
    // sent, when they carry an idempotency key: the server acknowledges a repeat as a duplicate.
    const unacknowledged: HeldPublish[] = [];
    for (const pending of conn.pending.values()) {
      switch (pending.kind) {
        case "publish":
          if (
            !this.#stopped &&
            this.#settings.retryPublishes &&
            pending.publish.key !== undefined &&
            !pending.publish.request.done
          ) {
            unacknowledged.push(pending.publish);
          } else {
            pending.publish.request.reject(failure);
          }
          break;
        case "unsubscribe":
          // The server forgets every subscription of a closed connection.
          pending.request?.resolve();
          break;
        case "refresh":
          // The next connection presents the new token at the upgrade.
          pending.request.resolve();
          break;
        case "presence":
          pending.request.reject(failure);
          break;
        default:
          // Subscriptions stay registered and are restored by the next connection.
          break;
      }
    }
    conn.pending.clear();
    // The next connection's resubscription sends what a retry would have sent.
    for (const registration of this.#registry.registrations()) this.#cancelRetry(registration);
    this.#registry.connectionEnded(unacknowledged);
  }

  #markHealthy(conn: Conn): void {
    if (conn.healthy) return;
    conn.healthy = true;
    this.#clock.clearTimeout(conn.healthTimer);
    this.#schedule.reset();
    this.#attempts = 0;
  }

  #checkHealth(conn: Conn): void {
    if (conn.ready && conn.restoring === 0) this.#markHealthy(conn);
  }

  /** Something arrived: the server is alive. */
  #alive(conn: Conn): void {
    conn.lastReceived = this.#clock.now();
    conn.pingDeadline = undefined;
  }

  /**
   * The idle timer is moved only when it fires (not on every frame): when it fires early
   * (something arrived meanwhile) it is re-armed for the real deadline.
   */
  #armIdle(conn: Conn, at: number): void {
    this.#clock.clearTimeout(conn.idleTimer);
    const delay = Math.max(0, at - this.#clock.now());
    conn.idleTimer = this.#clock.setTimeout(() => this.#onIdleTimer(conn), delay);
  }

  #onIdleTimer(conn: Conn): void {
    if (this.#conn !== conn) return;
    const now = this.#clock.now();
    if (conn.pingDeadline !== undefined) {
      if (now >= conn.pingDeadline) {
        terminate(conn.ws);
        this.#lost(
          conn,
          undefined,
          `nothing arrived within ${this.#settings.pongTimeout} ms of a ping: presumed dead`,
          "backoff",
        );
        return;
      }
      this.#armIdle(conn, conn.pingDeadline);
      return;
    }
    const due = conn.lastReceived + this.#settings.idleTimeout;
    if (now < due) {
      this.#armIdle(conn, due);
      return;
    }
    this.#probe(conn);
  }

  /** Sends an app-level `ping`; the connection is dropped if nothing arrives in `pongTimeout`. */
  #probe(conn: Conn): void {
    if (conn.pingDeadline !== undefined) return;
    const id = this.#id();
    conn.pending.set(id, { kind: "ping" });
    conn.pingDeadline = this.#clock.now() + this.#settings.pongTimeout;
    this.#armIdle(conn, conn.pingDeadline);
    this.#send(conn, JSON.stringify({ type: "ping", id }));
  }

  /**
   * `online` or `offline`: while waiting to reconnect, try now (the wait was for a network that
   * is back); while connected, make sure the connection survived the change.
   */
  #networkChanged(): void {
    if (this.#stopped) return;
    if (this.#state === "reconnecting") {
      this.#clock.clearTimeout(this.#reconnectTimer);
      this.#attempt();
      return;
    }
    const conn = this.#conn;
    if (conn !== undefined && conn.ready) this.#probe(conn);
  }

  #stop(error: WirehubError | undefined): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#listeningToNetwork && this.#network !== undefined) {
      this.#network.removeEventListener("online", this.#onNetworkChange);
      this.#network.removeEventListener("offline", this.#onNetworkChange);
      this.#listeningToNetwork = false;
    }
    this.#stopError = error;
    this.#clock.clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const failure = error ?? closedError();
    const conn = this.#conn;
    if (conn !== undefined) {
      this.#endConnection(conn, failure);
      if (conn.ws.readyState === OPEN) {
        try {
          conn.ws.close(1000, "client closed");
        } catch {
          terminate(conn.ws);
        }
      } else {
        terminate(conn.ws);
      }
    }
    for (const registration of this.#registry.registrations()) this.#cancelRetry(registration);
    this.#registry.stop(failure, error);
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const waiter of waiters) waiter.reject(failure);
    const presence = this.#presenceWaiting;
    this.#presenceWaiting = [];
    for (const waiting of presence) waiting.request.reject(failure);
    this.#setState("closed");
    this.#emit("stopped", { error });
  }

  // ---- frames ---------------------------------------------------------------------------

  #onFrame(conn: Conn, data: unknown): void {
    if (typeof data !== "string") {
      this.#emit(
        "error",
        new WirehubError("invalid_frame", "ignored a binary frame: protocol v1 is JSON in text frames"),
      );
      return;
    }
    const parsed = parseServerMessage(data);
    if (!parsed.ok) {
      // A newer server may send message types this version does not know: ignored quietly.
      if (!parsed.unknownType) {
        this.#emit("error", new WirehubError("invalid_frame", `ignored a malformed frame: ${parsed.reason}`));
      }
      return;
    }
    this.#onMessage(conn, parsed.message);
  }

  #onMessage(conn: Conn, message: ServerMessage): void {
    switch (message.type) {
      case "welcome":
        return this.#onWelcome(conn, message.session);
      case "subscribed": {
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending?.kind !== "subscribe" || message.id === undefined) return;
        conn.pending.delete(message.id);
        if (pending.restoring) conn.restoring = Math.max(0, conn.restoring - 1);
        this.#registry.subscribed(message.channel, message.id, message, message.recovered);
        if (this.#conn === conn) this.#checkHealth(conn);
        return;
      }
      case "unsubscribed": {
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending?.kind === "unsubscribe" && message.id !== undefined) {
          conn.pending.delete(message.id);
          pending.request?.resolve();
        } else if (pending === undefined) {
          // Unasked: the server ended the subscription (e.g. a refreshed token no longer
          // allows the channel).
          this.#registry.revoked(message.channel);
        }
        return;
      }
      case "message":
        return this.#registry.delivery(message.channel, message.data, message.offset);
      case "gap":
        return this.#registry.gap(message.channel, message.epoch, message.offset);
      case "ack": {
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending?.kind !== "publish" || message.id === undefined) return;
        conn.pending.delete(message.id);
        pending.publish.request.resolve(message.offset);
        return;
      }
      case "refreshed": {
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending?.kind !== "refresh" || message.id === undefined) return;
        conn.pending.delete(message.id);
        pending.request.resolve();
        return;
      }
      case "presence": {
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending?.kind !== "presence" || message.id === undefined) return;
        conn.pending.delete(message.id);
        pending.request.resolve({
          channel: message.channel,
          count: message.count,
          members: message.members,
          truncated: message.truncated === true,
        });
        return;
      }
      case "join":
        return this.#emit("join", { channel: message.channel, member: message.member });
      case "leave":
        return this.#emit("leave", { channel: message.channel, member: message.member });
      case "pong":
        if (message.id !== undefined && conn.pending.get(message.id)?.kind === "ping") {
          conn.pending.delete(message.id);
        }
        return;
      case "error": {
        const error = new WirehubError(message.code, message.message, { fromServer: true });
        const pending = message.id === undefined ? undefined : conn.pending.get(message.id);
        if (pending === undefined || message.id === undefined) {
          this.#emit("error", error);
          return;
        }
        conn.pending.delete(message.id);
        switch (pending.kind) {
          case "publish":
            pending.publish.request.reject(error);
            return;
          case "unsubscribe":
            // `not_subscribed` means what was asked for is true already.
            pending.request?.resolve();
            return;
          case "subscribe":
            if (pending.restoring) conn.restoring = Math.max(0, conn.restoring - 1);
            this.#registry.refused(pending.channel, message.id, error);
            if (this.#conn === conn) this.#checkHealth(conn);
            return;
          case "refresh":
          case "presence":
            pending.request.reject(error);
            return;
          case "ping":
            return;
        }
      }
    }
  }

  #onWelcome(conn: Conn, session: string): void {
    if (conn.ready) return;
    conn.ready = true;
    this.#clock.clearTimeout(conn.connectTimer);
    this.#session = session;
    // Resubscriptions first, then the held publishes in order, all before any application
    // code runs (a `connected` listener that publishes comes after them).
    for (const registration of this.#registry.registrations()) {
      this.#sendSubscribe(conn, registration, true);
    }
    const held = this.#registry.takeHeld();
    for (const publish of held) {
      if (!publish.request.done) this.#sendPublish(conn, publish);
    }
    const presence = this.#presenceWaiting;
    this.#presenceWaiting = [];
    for (const waiting of presence) {
      if (!waiting.request.done) this.#sendPresence(conn, waiting.channel, waiting.request);
    }
    this.#checkHealth(conn);
    this.#setState("connected");
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    this.#emit("connected", { session });
  }

  // ---- requests -------------------------------------------------------------------------

  #sendSubscribe(conn: Conn, registration: Registration, restoring: boolean): void {
    this.#registry.sending(registration);
    const id = this.#id();
    registration.sent = true;
    registration.inFlight = id;
    conn.pending.set(id, { kind: "subscribe", channel: registration.channel, restoring });
    if (restoring) conn.restoring += 1;
    const frame: Record<string, unknown> = { type: "subscribe", id, channel: registration.channel };
    if (registration.position !== undefined) {
      frame.since = { epoch: registration.position.epoch, offset: registration.position.offset };
    }
    this.#send(conn, JSON.stringify(frame));
  }

  /**
   * Catches a subscription up from its position: `unsubscribe`, then `subscribe` with
   * `since` (the server replays from there, or answers `recovered: false`). While
   * disconnected nothing is sent: the next connection resubscribes with `since` anyway.
   */
  #resync(registration: Registration, cause: ResyncCause): void {
    const position = registration.position;
    if (position === undefined) return;
    this.#emit("resync", { channel: registration.channel, since: position, cause });
    const conn = this.#conn;
    if (conn?.ready !== true || !registration.sent) return;
    const id = this.#id();
    conn.pending.set(id, { kind: "unsubscribe", request: undefined });
    this.#send(conn, JSON.stringify({ type: "unsubscribe", id, channel: registration.channel }));
    this.#sendSubscribe(conn, registration, false);
  }

  /**
   * Sends `registration`'s refused `subscribe` again after the subscribe backoff, with the
   * same `since` (its position moves only with what its consumer was handed), on the same
   * connection; a connection lost meanwhile resubscribes it instead.
   */
  #retrySubscribe(registration: Registration, error: WirehubError): void {
    this.#cancelRetry(registration);
    const k = registration.refusals;
    registration.refusals = k + 1;
    const backoff = this.#settings.subscribeBackoff;
    const delay = backoffDelay(backoff, k, backoff.jitter === "full" ? this.#random() : 0);
    const conn = this.#conn;
    registration.retryTimer = this.#clock.setTimeout(() => {
      registration.retryTimer = undefined;
      if (conn === undefined || this.#conn !== conn || !conn.ready) return;
      if (this.#registry.get(registration.channel) !== registration || registration.inFlight !== undefined) return;
      this.#sendSubscribe(conn, registration, false);
    }, delay);
    this.#emit("subscribeRetry", { channel: registration.channel, error, attempt: k + 1, delay });
  }

  #cancelRetry(registration: Registration): void {
    if (registration.retryTimer === undefined) return;
    this.#clock.clearTimeout(registration.retryTimer);
    registration.retryTimer = undefined;
  }

  #sendPresence(conn: Conn, channel: string, request: Request<Presence>): void {
    const id = this.#id();
    conn.pending.set(id, { kind: "presence", request });
    this.#send(conn, JSON.stringify({ type: "presence", channel, id }));
  }

  #sendPublish(conn: Conn, publish: HeldPublish): void {
    const id = this.#id();
    publish.id = id;
    conn.pending.set(id, { kind: "publish", publish });
    const key = publish.key === undefined ? "" : `,"idempotency_key":${JSON.stringify(publish.key)}`;
    this.#send(
      conn,
      `{"type":"publish","id":${id},"channel":${JSON.stringify(publish.channel)},"data":${publish.json}${key}}`,
    );
  }

  #send(conn: Conn, text: string): void {
    try {
      conn.ws.send(text);
    } catch (error) {
      // The socket is closing; its close event follows and decides what happens next.
      conn.lastError = error instanceof Error ? error.message : String(error);
    }
  }

  #unsubscribe(channel: string, subscription: Subscription<any>): Promise<void> {
    const registration = this.#registry.get(channel);
    if (registration === undefined || registration.subscription !== subscription) {
      return Promise.resolve();
    }
    this.#registry.remove(registration);
    this.#cancelRetry(registration);
    const waiting = registration.waiting;
    registration.waiting = undefined;
    if (waiting !== undefined) {
      // Not handed out yet: its `subscribe` call fails instead.
      waiting.reject(closedError());
      subscription.discard();
    } else {
      subscription.end(undefined);
    }
    const conn = this.#conn;
    if (conn?.ready !== true || !registration.sent) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const id = this.#id();
      const request = this.#request(resolve, reject, () => conn.pending.delete(id));
      conn.pending.set(id, { kind: "unsubscribe", request });
      this.#send(conn, JSON.stringify({ type: "unsubscribe", id, channel }));
    });
  }

  #subscribeTimedOut(registration: Registration): void {
    if (!this.#registry.remove(registration)) return;
    registration.subscription.discard();
    const conn = this.#conn;
    if (conn?.ready && registration.sent) {
      // The server may still subscribe: undo it. Its late `subscribed` is ignored.
      const id = this.#id();
      conn.pending.set(id, { kind: "unsubscribe", request: undefined });
      this.#send(conn, JSON.stringify({ type: "unsubscribe", id, channel: registration.channel }));
    }
  }

  #publishTimedOut(publish: HeldPublish): void {
    // A held publish whose caller gave up is not sent; a sent one's late ack is ignored.
    this.#registry.forget(publish);
    if (publish.id !== undefined) this.#conn?.pending.delete(publish.id);
  }

  /** A request that settles once; rejects with `timeout` after `requestTimeout`. */
  #request<T>(
    resolve: (value: T) => void,
    reject: (error: WirehubError) => void,
    onTimeout?: () => void,
    timed = true,
  ): Request<T> {
    let done = false;
    const timer = timed
      ? this.#clock.setTimeout(() => {
          if (done) return;
          done = true;
          onTimeout?.();
          reject(timeoutError());
        }, this.#settings.requestTimeout)
      : undefined;
    return {
      get done() {
        return done;
      },
      resolve: (value: T) => {
        if (done) return;
        done = true;
        if (timer !== undefined) this.#clock.clearTimeout(timer);
        resolve(value);
      },
      reject: (error: WirehubError) => {
        if (done) return;
        done = true;
        if (timer !== undefined) this.#clock.clearTimeout(timer);
        reject(error);
      },
    };
  }

  #id(): number {
    const id = this.#nextId;
    this.#nextId += 1;
    return id;
  }

  #setState(state: ClientState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#emit("state", { state, previous });
  }

  #emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]): void {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        reportListenerError(error);
      }
    }
  }
}
