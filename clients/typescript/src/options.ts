/**
 * The client's options as the application writes them ({@link ClientOptions}) and as the client
 * uses them ({@link Settings}): checked once, in the constructor, with every default filled in.
 */

import { type Backoff, DEFAULT_BACKOFF, DEFAULT_SUBSCRIBE_BACKOFF } from "./backoff.js";
import type { Clock, NetworkEvents, WebSocketConstructor } from "./platform.js";

/** Options of {@link WirehubClient} (durations in milliseconds). */
export interface ClientOptions {
  /** A JWT, sent as the `?token=` query parameter of every upgrade request. */
  token?: string | undefined;
  /** The WebSocket class. Default: the global `WebSocket`; in Node 20 pass `ws`'s export. */
  WebSocket?: WebSocketConstructor | undefined;
  /** The reconnect schedule. Default 1000 ms, ×2, 30000 ms, full jitter. */
  backoff?: Partial<Backoff> | undefined;
  /**
   * The retry schedule of a subscription's `subscribe` that the server refused for a passing
   * reason (`internal`, e.g. its broker is unavailable, or `rate_limited`) while restoring it
   * after a reconnect or catching it up: the subscription stays and the same `subscribe`
   * (same `since`) is sent again after this delay, on the same connection. Default 100 ms,
   * ×2, 5000 ms, full jitter.
   */
  subscribeBackoff?: Partial<Backoff> | undefined;
  /** Consecutive reconnects before stopping; default unlimited; `0` = one attempt only. */
  maxReconnects?: number | undefined;
  /** Uptime that proves a connection healthy (resets the backoff). Default 10000. */
  healthyAfter?: number | undefined;
  /** From the start of an attempt until `welcome`. Default 10000. */
  connectTimeout?: number | undefined;
  /** Silence after which an app-level `ping` is sent. Default 45000. */
  idleTimeout?: number | undefined;
  /** Silence after that ping after which the server is presumed dead. Default 10000. */
  pongTimeout?: number | undefined;
  /** Publishes held while disconnected. Default 64. */
  publishBuffer?: number | undefined;
  /**
   * Give every publish a random `idempotency_key` and send the ones whose ack was lost with
   * the connection again after the reconnect: the server publishes each once (while the first
   * message is in the channel's history). With `false` they reject with `disconnected`.
   * Default `true`.
   */
  retryPublishes?: boolean | undefined;
  /**
   * Events a subscription holds for a slow consumer (its async iterator, or callbacks that
   * return promises). When full it takes no more and catches up from the server's history
   * once the consumer drained half: nothing is dropped in silence. Default 1024.
   */
  subscriptionBuffer?: number | undefined;
  /** How long `subscribe`, `unsubscribe`, `publish` and `refreshToken` wait. Default 10000. */
  requestTimeout?: number | undefined;
  /** The jitter source: uniform in `[0, 1)`. Default `Math.random`. */
  random?: (() => number) | undefined;
  /** Timers and time. Default the real ones (for tests). */
  clock?: Clock | undefined;
  /**
   * Where `online` and `offline` events come from. Default: `window` in browsers (nothing in
   * Node); `null` turns this off. When the network comes back the client reconnects at once
   * instead of waiting out its backoff delay; when it changes while connected, the client
   * checks the connection with an app-level `ping` (dropped after `pongTimeout` without answer).
   */
  network?: NetworkEvents | null | undefined;
}

/** The checked options, every default filled in. */
export interface Settings {
  /** Replaced by `refreshToken`. */
  token: string | undefined;
  readonly backoff: Backoff;
  readonly subscribeBackoff: Backoff;
  readonly maxReconnects: number | undefined;
  readonly healthyAfter: number;
  readonly connectTimeout: number;
  readonly idleTimeout: number;
  readonly pongTimeout: number;
  readonly publishBuffer: number;
  readonly retryPublishes: boolean;
  readonly subscriptionBuffer: number;
  readonly requestTimeout: number;
}

const DEFAULTS = {
  healthyAfter: 10_000,
  connectTimeout: 10_000,
  idleTimeout: 45_000,
  pongTimeout: 10_000,
  publishBuffer: 64,
  subscriptionBuffer: 1024,
  requestTimeout: 10_000,
} as const;

/**
 * Checks `options` and fills in the defaults.
 * @throws {TypeError} for an option of the wrong kind or out of range.
 */
export function resolveSettings(options: ClientOptions): Settings {
  return {
    token: options.token,
    backoff: backoffOption("backoff", options.backoff, DEFAULT_BACKOFF),
    subscribeBackoff: backoffOption("subscribeBackoff", options.subscribeBackoff, DEFAULT_SUBSCRIBE_BACKOFF),
    maxReconnects:
      options.maxReconnects === undefined ? undefined : count("maxReconnects", options.maxReconnects, 0),
    healthyAfter: duration("healthyAfter", options.healthyAfter, DEFAULTS.healthyAfter),
    connectTimeout: duration("connectTimeout", options.connectTimeout, DEFAULTS.connectTimeout),
    idleTimeout: duration("idleTimeout", options.idleTimeout, DEFAULTS.idleTimeout),
    pongTimeout: duration("pongTimeout", options.pongTimeout, DEFAULTS.pongTimeout),
    publishBuffer: count("publishBuffer", options.publishBuffer, DEFAULTS.publishBuffer),
    retryPublishes: options.retryPublishes ?? true,
    subscriptionBuffer: count("subscriptionBuffer", options.subscriptionBuffer, DEFAULTS.subscriptionBuffer),
    requestTimeout: duration("requestTimeout", options.requestTimeout, DEFAULTS.requestTimeout),
  };
}

function backoffOption(name: string, given: Partial<Backoff> | undefined, defaults: Backoff): Backoff {
  const jitter = given?.jitter ?? defaults.jitter;
  if (jitter !== "full" && jitter !== "none") {
    throw new TypeError(`wirehub: option ${name}.jitter must be "full" or "none"`);
  }
  const multiplier = given?.multiplier ?? defaults.multiplier;
  if (typeof multiplier !== "number") {
    throw new TypeError(`wirehub: option ${name}.multiplier must be a number`);
  }
  return {
    initial: duration(`${name}.initial`, given?.initial, defaults.initial),
    max: duration(`${name}.max`, given?.max, defaults.max),
    multiplier,
    jitter,
  };
}

function duration(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value >= 0)) {
    throw new TypeError(`wirehub: option ${name} must be a non-negative number of milliseconds`);
  }
  return value;
}

function count(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0) {
    throw new TypeError(`wirehub: option ${name} must be a non-negative integer`);
  }
  return value;
}
