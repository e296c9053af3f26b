/**
 * The reconnect schedule: capped exponential backoff with full jitter applied after the cap.
 *
 * The delay before the `k`-th consecutive retry (`k = 0, 1, 2, …`) is
 *
 * ```text
 * ceiling(k) = min(max, initial × multiplier^k)
 * delay(k)   = random(0, ceiling(k))        with jitter "full" (the default)
 * delay(k)   = ceiling(k)                   with jitter "none"
 * ```
 *
 * Jitter is applied *after* the cap, so that even clients that have been failing for a long
 * time (all at the cap) spread their reconnects over the whole `[0, max)` window instead of
 * arriving together. With the defaults (1 s, ×2, 30 s) the ceilings are 1, 2, 4, 8, 16, 30,
 * 30, … seconds.
 *
 * `k` counts retries since the connection last proved healthy. When the server's close code
 * asks the client to back off (4100–4199, other error codes, or the connection failed without
 * a close code), `k` is raised to at least 1 first, so such a retry never uses the smallest
 * ceiling.
 *
 * Everything here is pure: the random source is injected, so tests compute exact delays.
 * Durations are in milliseconds.
 */

/** How reconnect delays are randomized. */
export type Jitter = "full" | "none";

/** The parameters of the reconnect schedule (milliseconds). */
export interface Backoff {
  /** The ceiling of the first retry. Default 1000. */
  readonly initial: number;
  /** The largest ceiling: the cap. Default 30000. */
  readonly max: number;
  /** How much the ceiling grows per consecutive retry. Default 2; below 1 (or NaN) counts as 1. */
  readonly multiplier: number;
  /** `"full"`: `random(0, ceiling)` (default); `"none"`: the ceiling itself. */
  readonly jitter: Jitter;
}

/** 1 s, ×2, 30 s, full jitter: the same schedule as the Rust SDK and `wirehub sub`. */
export const DEFAULT_BACKOFF: Backoff = Object.freeze({
  initial: 1000,
  max: 30_000,
  multiplier: 2,
  jitter: "full",
});

/**
 * 100 ms, ×2, 5 s, full jitter: the retries of a `subscribe` refused for a passing reason
 * (`internal`, `rate_limited`) on a live connection.
 */
export const DEFAULT_SUBSCRIBE_BACKOFF: Backoff = Object.freeze({
  initial: 100,
  max: 5000,
  multiplier: 2,
  jitter: "full",
});

/** What a close code (or a failed attempt) tells the client to do next. */
export type ReconnectAdvice = "reconnect" | "backoff" | "stop";

/**
 * The contract's close-code ranges: 1000, 1001 and 4200–4299 reconnect (with jitter);
 * 4000–4099 stop; everything else (4100–4199, other 1xxx codes, 1005/1006 without a close
 * frame) reconnects after backing off.
 */
export function adviceForCloseCode(code: number): ReconnectAdvice {
  if (code === 1000 || code === 1001 || (code >= 4200 && code <= 4299)) {
    return "reconnect";
  }
  if (code >= 4000 && code <= 4099) {
    return "stop";
  }
  return "backoff";
}

/** `min(max, initial × multiplier^k)`: the ceiling of the `k`-th consecutive retry. */
export function backoffCeiling(backoff: Backoff, k: number): number {
  const multiplier = backoff.multiplier >= 1 ? backoff.multiplier : 1;
  const value = backoff.initial * multiplier ** k;
  if (!Number.isFinite(value)) {
    // Overflowed (or 0 × ∞): the cap applies.
    return backoff.max;
  }
  return Math.min(backoff.max, value);
}

/**
 * The delay of the `k`-th retry given a uniform sample in `[0, 1)` (the jitter draw).
 * `sample` is ignored with jitter `"none"`; out-of-range samples are clamped, NaN counts as 0.
 */
export function backoffDelay(backoff: Backoff, k: number, sample: number): number {
  const ceiling = backoffCeiling(backoff, k);
  if (backoff.jitter === "none") {
    return ceiling;
  }
  const clamped = Number.isFinite(sample) ? Math.min(1, Math.max(0, sample)) : 0;
  return ceiling * clamped;
}

/** The reconnect state of one client: the retry counter and the random source. */
export class ReconnectSchedule {
  readonly backoff: Backoff;
  #retries = 0;
  readonly #random: () => number;

  /** A schedule that has not failed yet, drawing jitter from `random` (default `Math.random`). */
  constructor(backoff: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random) {
    this.backoff = backoff;
    this.#random = random;
  }

  /** Consecutive retries since the last healthy connection (`k` of the next retry). */
  get retries(): number {
    return this.#retries;
  }

  /**
   * The delay before the next connection attempt, given the advice of the close code (or
   * `"backoff"` for a failed attempt without one). Advances the counter. `"stop"` is treated
   * like `"backoff"`: deciding to stop is the caller's job.
   */
  nextDelay(advice: ReconnectAdvice): number {
    const k = advice === "reconnect" ? this.#retries : Math.max(1, this.#retries);
    this.#retries = k + 1;
    const sample = this.backoff.jitter === "full" ? this.#random() : 0;
    return backoffDelay(this.backoff, k, sample);
  }

  /** The connection proved healthy: the next retry starts from the first ceiling again. */
  reset(): void {
    this.#retries = 0;
  }
}

/**
 * The longest wait the server can ask for (1 hour, like `wirehub_protocol::MAX_HINT`);
 * longer `Retry-After` values and hint windows are cut to it.
 */
export const MAX_HINT = 3_600_000;

/** When to come back, in milliseconds from a close (or from a refused upgrade). */
export interface RetryWindow {
  /** The earliest point. */
  readonly min: number;
  /** The latest point (`≥ min`). */
  readonly max: number;
}

/**
 * The retry window a close reason carries, if any: one `;`-separated part of the reason of the
 * form `retry=MIN-MAX` (or `retry=MS`), in milliseconds from the close, `MIN ≤ MAX`, e.g.
 * `"server shutting down; retry=1200-3700"`. Other parts are ignored; a malformed hint counts
 * as none (the client then uses its own backoff); a window is cut to {@link MAX_HINT}.
 */
export function parseRetryHint(reason: string): RetryWindow | undefined {
  for (const part of reason.split(";")) {
    const trimmed = part.trim();
    if (!trimmed.startsWith("retry=")) continue;
    const value = trimmed.slice("retry=".length);
    const dash = value.indexOf("-");
    const min = milliseconds(dash === -1 ? value : value.slice(0, dash));
    const max = milliseconds(dash === -1 ? value : value.slice(dash + 1));
    if (min === undefined || max === undefined || min > max) continue;
    return { min: Math.min(min, MAX_HINT), max: Math.min(max, MAX_HINT) };
  }
  return undefined;
}

/**
 * `Retry-After` in milliseconds: the whole seconds form (the HTTP-date form is not used by
 * wirehub and counts as none), cut to {@link MAX_HINT}.
 */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (!/^\d+$/.test(text)) return undefined;
  return Math.min(Number(text) * 1000, MAX_HINT);
}

/** Why the client waits as long as it does before reconnecting (the `reconnecting` event). */
export type ReconnectReason =
  /** The client's own schedule ({@link Backoff}). */
  | { readonly kind: "backoff" }
  /**
   * The server refused the upgrade as overloaded (HTTP 503 or 429) with this `Retry-After`
   * (milliseconds); the delay is that plus a random part of a second. Seen under Node with
   * `ws` only: a browser cannot read a refused upgrade's status.
   */
  | { readonly kind: "retryAfter"; readonly retryAfter: number }
  /**
   * The server's close reason carried this retry window (`retry=MIN-MAX`, e.g. on shutdown,
   * 1001, or a browser refused as overloaded, 4103); the delay is a uniformly random point
   * in it.
   */
  | { readonly kind: "retryHint"; readonly min: number; readonly max: number };

/**
 * The delay the server asked for, given a uniform sample in `[0, 1)`: `retryAfter` plus
 * `sample` of a second, or the point `sample` of the way through the hint's window (never
 * before its start); `undefined` for the client's own backoff. Out-of-range samples are
 * clamped, NaN counts as 0.
 */
export function hintedDelay(reason: ReconnectReason, sample: number): number | undefined {
  const clamped = Number.isFinite(sample) ? Math.min(1, Math.max(0, sample)) : 0;
  switch (reason.kind) {
    case "retryAfter":
      return reason.retryAfter + 1000 * clamped;
    case "retryHint":
      return reason.min + (reason.max - reason.min) * clamped;
    case "backoff":
      return undefined;
  }
}

/** A non-negative integer of at most 64 bits written in decimal digits, or `undefined`. */
function milliseconds(text: string): number | undefined {
  const digits = text.trim();
  if (!/^\d{1,20}$/.test(digits)) return undefined;
  const value = Number(digits);
  return value <= 18_446_744_073_709_551_615 ? value : undefined;
}
