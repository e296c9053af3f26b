/**
 * The SDK's one error type, {@link WirehubError}, and its codes: the server's codes passed
 * through, and the client's own for what happens on this side (refusals, timeouts, a full
 * buffer). `fatal` tells a caller whether the client stopped for good.
 */

import type { ServerErrorCode } from "./protocol.js";

/** Client-side error codes (the server's own codes are passed through as they are). */
export type ClientErrorCode =
  /** The URL is not a valid `ws://` or `wss://` URL. Fatal, thrown by the constructor. */
  | "invalid_url"
  /** The server refused the WebSocket upgrade with HTTP 401 or 403 (seen in Node only). Fatal. */
  | "unauthorized"
  /** The server closed with a code in 4000–4099 ("do not reconnect"). Fatal. */
  | "rejected"
  /** A connection attempt failed; retried with backoff (fatal once `maxReconnects` is reached). */
  | "connect_failed"
  /**
   * The server refused the upgrade as overloaded: HTTP 503 (its connection rate or connection
   * limit) or 429 (too many connections from this address), seen in Node only. Retried after
   * `retryAfter` (the server's `Retry-After`) plus a random part of a second, or after backing
   * off when the server named no wait (fatal once `maxReconnects` is reached).
   */
  | "overloaded"
  /** The connection was lost before the server answered this request. */
  | "disconnected"
  /** The publish buffer is full while disconnected; nothing was sent. */
  | "buffer_full"
  /** No answer within `requestTimeout`. */
  | "timeout"
  /** The client was closed with `close()`. Fatal. */
  | "closed"
  /** This client already has a subscription to the channel. */
  | "already_subscribed"
  /** The server ended the subscription on its own (a refreshed token no longer allows it). */
  | "revoked"
  /** The channel name breaks the protocol's rules; nothing was sent. */
  | "invalid_channel"
  /** The data to publish cannot be serialized to JSON. */
  | "invalid_data"
  /** The `idempotencyKey` given to `publish` is not 1 to 64 visible ASCII characters. */
  | "invalid_idempotency_key"
  /** The server sent a frame that is not valid protocol v1; it was ignored. */
  | "invalid_frame";

/** Every error code a {@link WirehubError} can carry. */
export type WirehubErrorCode = ClientErrorCode | ServerErrorCode | (string & {});

/** Extra details carried by some errors. */
export interface WirehubErrorDetails {
  /** `unauthorized`, `overloaded`: the HTTP status of the refused upgrade (401, 403, 503, 429). */
  readonly status?: number;
  /** `overloaded`: the server's `Retry-After`, in milliseconds, when it sent one. */
  readonly retryAfter?: number;
  /** `rejected`, `disconnected`: the WebSocket close code, when there was one. */
  readonly closeCode?: number;
  /** `rejected`, `disconnected`: the close frame's reason. */
  readonly reason?: string;
  /** The channel concerned, for subscription errors. */
  readonly channel?: string;
  /** `buffer_full`: the buffer's capacity. */
  readonly capacity?: number;
  /** Whether the code comes from the server's `error` message. */
  readonly fromServer?: boolean;
}

const FATAL: ReadonlySet<string> = new Set(["invalid_url", "unauthorized", "rejected", "closed"]);

/** Everything that can go wrong in the client; `code` is a stable snake_case word. */
export class WirehubError extends Error implements WirehubErrorDetails {
  readonly code: WirehubErrorCode;
  readonly status?: number;
  readonly retryAfter?: number;
  readonly closeCode?: number;
  readonly reason?: string;
  readonly channel?: string;
  readonly capacity?: number;
  readonly fromServer: boolean;

  constructor(code: WirehubErrorCode, message: string, details: WirehubErrorDetails = {}) {
    super(message);
    this.name = "WirehubError";
    this.code = code;
    this.fromServer = details.fromServer ?? false;
    if (details.status !== undefined) this.status = details.status;
    if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.reason !== undefined) this.reason = details.reason;
    if (details.channel !== undefined) this.channel = details.channel;
    if (details.capacity !== undefined) this.capacity = details.capacity;
  }

  /** Whether this kind of error always stops the client for good. */
  get fatal(): boolean {
    return !this.fromServer && FATAL.has(this.code);
  }
}
