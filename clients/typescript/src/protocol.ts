/**
 * Protocol version 1: one JSON object per text frame, each with a `type`.
 *
 * The types below describe the frames on the wire; {@link parseServerMessage} validates a
 * received frame against them, so the rest of the client never sees a malformed one.
 */

/** A position in a channel's stream: the epoch and the offset within it. */
export interface StreamPosition {
  readonly epoch: string;
  readonly offset: number;
}

// ---- server → client ------------------------------------------------------------------

/** First message on every connection. */
export interface WelcomeMessage {
  readonly type: "welcome";
  readonly version: number;
  readonly session: string;
  /** The server's heartbeat interval, in seconds. */
  readonly heartbeat: number;
}

/** The answer to `subscribe`. `offset` is the stream's latest offset when it took effect. */
export interface SubscribedMessage {
  readonly type: "subscribed";
  readonly id?: number;
  readonly channel: string;
  readonly epoch: string;
  readonly offset: number;
  /** Present when `since` was given: whether every missed message follows this reply. */
  readonly recovered?: boolean;
}

/** The answer to `unsubscribe`, or (without the request's `id`) the server ending a subscription. */
export interface UnsubscribedMessage {
  readonly type: "unsubscribed";
  readonly id?: number;
  readonly channel: string;
}

/** A delivery. `offset` is strictly increasing per channel and epoch, starting at 1. */
export interface MessageMessage<T = unknown> {
  readonly type: "message";
  readonly channel: string;
  readonly data: T;
  readonly offset: number;
}

/** The answer to `publish`: the offset the message got. */
export interface AckMessage {
  readonly type: "ack";
  readonly id?: number;
  readonly offset: number;
  /** True when the publish's `idempotency_key` matched a kept message: nothing was published. */
  readonly duplicate?: boolean;
}

/** The answer to `refresh`: when the new token expires (seconds since the Unix epoch). */
export interface RefreshedMessage {
  readonly type: "refreshed";
  readonly id?: number;
  readonly expires: number;
}

/** The answer to `ping`. */
export interface PongMessage {
  readonly type: "pong";
  readonly id?: number;
}

/**
 * Publications of `channel` this subscription will not be sent (its subscriber fell behind
 * under `on_slow = "gap"`, or a broker fault lost them). The subscription stays; the client
 * catches up with `subscribe` + `since`.
 */
export interface GapMessage {
  readonly type: "gap";
  readonly channel: string;
  /** The stream's epoch now. */
  readonly epoch: string;
  /** The stream's offset now. */
  readonly offset: number;
  /** The first offset not sent, when known. */
  readonly from?: number;
  /** The last offset not sent, when known. */
  readonly to?: number;
}

/** The contract's error codes (a newer server may send others). */
export type ServerErrorCode =
  | "invalid_json"
  | "unknown_type"
  | "invalid_message"
  | "invalid_channel"
  | "not_subscribed"
  | "already_subscribed"
  | "too_many_subscriptions"
  | "binary_not_supported"
  | "rate_limited"
  | "too_large"
  | "forbidden"
  | "unauthorized"
  | "internal";

/** A request was refused; the connection stays open. */
export interface ErrorMessage {
  readonly type: "error";
  readonly id?: number;
  readonly code: ServerErrorCode | (string & {});
  readonly message: string;
}

/** Every message the server sends. */
export type ServerMessage =
  | WelcomeMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | MessageMessage
  | AckMessage
  | RefreshedMessage
  | PongMessage
  | GapMessage
  | ErrorMessage;

// ---- client → server ------------------------------------------------------------------

/** Every message the client sends. */
export type ClientMessage =
  | { type: "subscribe"; id?: number; channel: string; since?: StreamPosition }
  | { type: "unsubscribe"; id?: number; channel: string }
  | { type: "publish"; id?: number; channel: string; data: unknown }
  | { type: "ping"; id?: number }
  | { type: "refresh"; id?: number; token: string };

// ---- validation ---------------------------------------------------------------------------

/** The outcome of {@link parseServerMessage}. */
export type ParseResult =
  | { readonly ok: true; readonly message: ServerMessage }
  /** `unknownType`: a well-formed frame of a type this version does not know (ignore it). */
  | { readonly ok: false; readonly reason: string; readonly unknownType: boolean };

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const isOffset = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/** Checks the optional request `id`. */
const validId = (frame: Json): boolean => frame.id === undefined || isOffset(frame.id);

function fail(reason: string, unknownType = false): ParseResult {
  return { ok: false, reason, unknownType };
}

/**
 * Parses and validates one text frame from the server. Never throws: a frame that is not
 * JSON, not an object, or lacks a field of the right kind gives `ok: false` with the reason.
 * Unknown extra fields are ignored (and kept).
 */
export function parseServerMessage(text: string): ParseResult {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return fail("the frame is not valid JSON");
  }
  if (!isObject(frame)) {
    return fail("the frame is not a JSON object");
  }
  const type = frame.type;
  if (typeof type !== "string") {
    return fail("the frame has no string `type`");
  }
  if (!validId(frame)) {
    return fail(`${type}: \`id\` must be a non-negative integer`);
  }
  const need = (ok: boolean, what: string): ParseResult | undefined =>
    ok ? undefined : fail(`${type}: ${what}`);
  let problem: ParseResult | undefined;
  switch (type) {
    case "welcome":
      problem =
        need(typeof frame.version === "number", "`version` must be a number") ??
        need(typeof frame.session === "string", "`session` must be a string") ??
        need(typeof frame.heartbeat === "number", "`heartbeat` must be a number");
      break;
    case "subscribed":
      problem =
        need(typeof frame.channel === "string", "`channel` must be a string") ??
        need(typeof frame.epoch === "string", "`epoch` must be a string") ??
        need(isOffset(frame.offset), "`offset` must be a non-negative integer") ??
        need(
          frame.recovered === undefined || typeof frame.recovered === "boolean",
          "`recovered` must be a boolean",
        );
      break;
    case "unsubscribed":
      problem = need(typeof frame.channel === "string", "`channel` must be a string");
      break;
    case "message":
      problem =
        need(typeof frame.channel === "string", "`channel` must be a string") ??
        need("data" in frame, "`data` is missing") ??
        need(isOffset(frame.offset), "`offset` must be a non-negative integer");
      break;
    case "ack":
      problem =
        need(isOffset(frame.offset), "`offset` must be a non-negative integer") ??
        need(frame.duplicate === undefined || typeof frame.duplicate === "boolean", "`duplicate` must be a boolean");
      break;
    case "refreshed":
      problem = need(typeof frame.expires === "number", "`expires` must be a number");
      break;
    case "pong":
      break;
    case "gap":
      problem =
        need(typeof frame.channel === "string", "`channel` must be a string") ??
        need(typeof frame.epoch === "string", "`epoch` must be a string") ??
        need(isOffset(frame.offset), "`offset` must be a non-negative integer") ??
        need(frame.from === undefined || isOffset(frame.from), "`from` must be a non-negative integer") ??
        need(frame.to === undefined || isOffset(frame.to), "`to` must be a non-negative integer");
      break;
    case "error":
      problem =
        need(typeof frame.code === "string", "`code` must be a string") ??
        need(typeof frame.message === "string", "`message` must be a string");
      break;
    default:
      return fail(`unknown message type ${JSON.stringify(type)}`, true);
  }
  return problem ?? { ok: true, message: frame as unknown as ServerMessage };
}

const CHANNEL = /^[A-Za-z0-9_\-:.@/=+,#]{1,128}$/;

/**
 * Whether `channel` follows the protocol's naming rules: 1 to 128 ASCII letters, digits and
 * `_ - : . @ / = + , #` (case-sensitive; `*` is reserved for permission patterns).
 */
export function isValidChannel(channel: unknown): channel is string {
  return typeof channel === "string" && CHANNEL.test(channel);
}

/** Whether `key` is a valid `idempotency_key`: 1 to 64 visible ASCII characters (`!` to `~`). */
export function isValidIdempotencyKey(key: unknown): key is string {
  return typeof key === "string" && /^[!-~]{1,64}$/.test(key);
}
