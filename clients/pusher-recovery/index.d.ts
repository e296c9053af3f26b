// Types of @wirehub/pusher-recovery (the package is plain ESM JavaScript, index.js).

/** A place in a channel's stream on a wirehub server. */
export interface Position {
  /** The stream's identity: offsets of different epochs are not comparable. */
  epoch: string;
  /** The offset of the last event handed to the app (0: none yet). */
  offset: number;
}

/** A recovery that handed the app everything it missed. */
export interface Recovered {
  channel: string;
  /** The position recovered from: the last event handed on before the connection was lost. */
  since: Position;
  /** Events handed on by the recovery (replayed and held live ones, each once). */
  events: number;
  /** Requests it took (more than one when the replay did not fit the connection's queue). */
  rounds: number;
  /** Time from the resubscription to the last event handed on, in milliseconds. */
  ms: number;
}

/**
 * Why a recovery failed: the server's reasons (`epoch_changed`: the stream's history was
 * lost, e.g. an in-memory server restarted; `out_of_history`: the history no longer holds
 * every event missed; `not_subscribed`; `invalid_position`; `unavailable`: the broker
 * failed; `rate_limited`: more requests per second than the connection may hold
 * subscriptions), or the connector's (`timeout`: no answer in `timeoutMs`; `overflow`:
 * more than `maxHeld` frames held meanwhile; `not_sent`; `no_progress`).
 */
export type RecoveryFailureReason =
  | "epoch_changed"
  | "out_of_history"
  | "not_subscribed"
  | "invalid_position"
  | "unavailable"
  | "rate_limited"
  | "timeout"
  | "not_sent"
  | "no_progress"
  | "overflow"
  | (string & {});

/** A recovery that could not hand on everything missed: the app should refetch. */
export interface RecoveryFailed {
  channel: string;
  reason: RecoveryFailureReason;
  /** The position the recovery started from. */
  since: Position;
}

export interface RecoveryOptions {
  /** Called after each complete recovery. */
  onRecovered?: (info: Recovered) => void;
  /**
   * Called when events missed could not be recovered; the channel's events from the new
   * subscription on follow, in order.
   */
  onRecoveryFailed?: (info: RecoveryFailed) => void;
  /** Which channels to recover (default: all). */
  channels?: (name: string) => boolean;
  /** How long to wait for the server's answer (default 10 000 ms). */
  timeoutMs?: number;
  /**
   * Frames of one channel held while its recovery is under way (default 10 000); one more
   * and the recovery fails with `overflow`, the held frames handed on.
   */
  maxHeld?: number;
  /** The clock for `Recovered.ms` (default `Date.now`). */
  now?: () => number;
}

/** What `recover` returns. */
export interface Recovery {
  /** The last position of `channel` handed to the app. */
  position(channel: string): Position | undefined;
  /** Whether a recovery of `channel` is in flight (its events are held meanwhile). */
  recovering(channel: string): boolean;
  /** Socket ids of the client's earlier connections, newest first. */
  readonly socketIds: string[];
  /** Counts since `recover` was called. */
  readonly stats: { recovered: number; failed: number; replayed: number; duplicates: number };
  /** Removes the hooks; held events are handed on. */
  stop(): void;
}

/**
 * Recovers, after each reconnect, the events a pusher-js 8 client missed, from a wirehub
 * server's history: the app's handlers see every event once and in order, or
 * `onRecoveryFailed` is called. Works under Laravel Echo (`new Echo({ client: pusher, ... })`).
 */
export function recover(pusher: unknown, options?: RecoveryOptions): Recovery;
