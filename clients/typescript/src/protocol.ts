/**
 * Protocol version 1: one JSON object per text frame, each with a `type`.
 *
 * The frames' types are generated from the server's JSON Schema (`protocol.generated.ts`, see
 * `scripts/gen-protocol.mjs`); this module names them as the SDK exports them and loosens what
 * must stay open for newer servers (error codes). {@link parseServerMessage} checks a received
 * frame against the schema's field table, so the rest of the client never sees a malformed one.
 */

import {
  type FieldRule,
  serverMessageFields,
  type AckServerMessage,
  type ClientMessage as WireClientMessage,
  type ErrorCode,
  type ErrorServerMessage,
  type GapServerMessage,
  type JoinServerMessage,
  type LeaveServerMessage,
  type Member as WireMember,
  type PresenceServerMessage,
  type MessageServerMessage,
  type PongServerMessage,
  type RefreshedServerMessage,
  type ServerMessage as WireServerMessage,
  type StreamPosition as WireStreamPosition,
  type SubscribedServerMessage,
  type UnsubscribedServerMessage,
  type WelcomeServerMessage,
} from "./protocol.generated.js";

/** A position in a channel's stream: the epoch and the offset within it. */
export type StreamPosition = WireStreamPosition;

// ---- server → client ------------------------------------------------------------------

/** First message on every connection. */
export type WelcomeMessage = WelcomeServerMessage;

/** The answer to `subscribe`. `offset` is the stream's latest offset when it took effect. */
export type SubscribedMessage = SubscribedServerMessage;

/** The answer to `unsubscribe`, or (without the request's `id`) the server ending a subscription. */
export type UnsubscribedMessage = UnsubscribedServerMessage;

/** A delivery. `offset` is strictly increasing per channel and epoch, starting at 1. */
export interface MessageMessage<T = unknown> extends Omit<MessageServerMessage, "data"> {
  /** The published data, parsed. */
  readonly data: T;
}

/** The answer to `publish`: the offset the message got. */
export type AckMessage = AckServerMessage;

/** The answer to `refresh`: when the new token expires (seconds since the Unix epoch). */
export type RefreshedMessage = RefreshedServerMessage;

/** The answer to `ping`. */
export type PongMessage = PongServerMessage;

/**
 * Publications of `channel` this subscription will not be sent (its subscriber fell behind
 * under `on_slow = "gap"`, or a broker fault lost them). The subscription stays; the client
 * catches up with `subscribe` + `since`.
 */
export type GapMessage = GapServerMessage;

/**
 * A member of a presence channel: one connection (`client`, its session id), with the user
 * (`sub`) and `info` of its token.
 */
export type Member = WireMember;

/** The answer to `presence`: the exact `count`, at most the server's maximum listed. */
export type PresenceMessage = PresenceServerMessage;

/** A member joined a presence channel the client is subscribed to. */
export type JoinMessage = JoinServerMessage;

/** A member left a presence channel the client is subscribed to. */
export type LeaveMessage = LeaveServerMessage;

/** The error codes this version knows (a newer server may send others). */
export type ServerErrorCode = Exclude<ErrorCode, "unknown">;

/** A request was refused; the connection stays open. */
export interface ErrorMessage extends Omit<ErrorServerMessage, "code"> {
  /** A stable snake_case code: one of {@link ServerErrorCode}, or a newer one. */
  readonly code: ServerErrorCode | (string & {});
}

/** Every message the server sends. */
export type ServerMessage =
  | Exclude<WireServerMessage, MessageServerMessage | ErrorServerMessage>
  | MessageMessage
  | ErrorMessage;

// ---- client → server ------------------------------------------------------------------

/** Every message the client sends. */
export type ClientMessage = WireClientMessage;

// ---- validation ---------------------------------------------------------------------------

/** The outcome of {@link parseServerMessage}. */
export type ParseResult =
  | { readonly ok: true; readonly message: ServerMessage }
  /** `unknownType`: a well-formed frame of a type this version does not know (ignore it). */
  | { readonly ok: false; readonly reason: string; readonly unknownType: boolean };

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const FIELDS: Readonly<Record<string, Readonly<Record<string, FieldRule>>>> = serverMessageFields;

/** Whether `value` is of the schema's kind, and how to say what it must be. */
const KINDS: Readonly<Record<string, { readonly test: (value: unknown) => boolean; readonly what: string }>> = {
  string: { test: (value) => typeof value === "string", what: "a string" },
  number: { test: (value) => typeof value === "number", what: "a number" },
  integer: { test: (value) => Number.isSafeInteger(value), what: "an integer" },
  offset: {
    test: (value) => typeof value === "number" && Number.isSafeInteger(value) && value >= 0,
    what: "a non-negative integer",
  },
  boolean: { test: (value) => typeof value === "boolean", what: "a boolean" },
  object: { test: isObject, what: "an object" },
  array: { test: (value) => Array.isArray(value), what: "an array" },
  any: { test: () => true, what: "present" },
};

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
  const fields = Object.prototype.hasOwnProperty.call(FIELDS, type) ? FIELDS[type] : undefined;
  if (fields === undefined) {
    return fail(`unknown message type ${JSON.stringify(type)}`, true);
  }
  for (const [field, rule] of Object.entries(fields)) {
    const optional = rule.endsWith("?");
    const kind = KINDS[optional ? rule.slice(0, -1) : rule] ?? KINDS.any!;
    const value = frame[field];
    if (value === undefined) {
      if (optional) continue;
      return fail(kind === KINDS.any ? `${type}: \`${field}\` is missing` : `${type}: \`${field}\` must be ${kind.what}`);
    }
    if (!kind.test(value)) {
      return fail(`${type}: \`${field}\` must be ${kind.what}`);
    }
  }
  return { ok: true, message: frame as unknown as ServerMessage };
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
