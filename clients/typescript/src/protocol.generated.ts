/**
 * The wire protocol's types, generated from the server's JSON Schema (`GET /schema/protocol.json`)
 * by `scripts/gen-protocol.mjs`. Do not edit: run `npm run gen:protocol` after the schema
 * changed. `src/protocol.ts` builds the SDK's protocol types on these.
 */

/** How a field is checked at run time: its JSON kind (`offset`: a non-negative integer, `any`: any value); `?` when it may be absent. */
export type FieldRule = FieldKind | `${FieldKind}?`;

/** The kinds of {@link FieldRule}. */
export type FieldKind = "string" | "number" | "integer" | "offset" | "boolean" | "object" | "array" | "any";

/** The version of wirehub WebSocket protocol. */
export const PROTOCOL_VERSION = 1;

/** The inside of an [`ApiError`]. */
export interface ApiErrorDetail {
  /** A stable snake_case code. */
  readonly code: ErrorCode;
  /** An explanation for people. */
  readonly message: string;
}

/** The broker's state, as on `/readyz` and `/metrics`. */
export interface BrokerStats {
  /** `memory` or `redis`. */
  readonly kind: string;
  /** Whether the broker is reachable. */
  readonly reachable: boolean;
  /** Broker subscriptions found silent and made again (`wirehub_broker_resubscribes_total`). */
  readonly resubscribes_total: number;
}

/** A channel with subscribers. */
export interface ChannelInfo {
  /** The channel. */
  readonly channel: string;
  /** Its subscriptions (one per subscribed connection). */
  readonly subscribers: number;
}

/** How many connections were closed with one close code. */
export interface CloseCount {
  /** The close code. */
  readonly code: number;
  /** Connections closed with it since start. */
  readonly count: number;
  /** Its documented meaning, one snake_case word. */
  readonly reason: string;
}

/**
 * The `code` of an `error` message: a stable snake_case word a program can branch on.
 *
 * Every variant except [`ErrorCode::Unknown`] is sent by the server. `Unknown` exists so that a
 * client built against this version still parses codes added later.
 */
export type ErrorCode =
  /** The text frame is not valid JSON. */
  | "invalid_json"
  /** The `type` is not one this protocol version knows. */
  | "unknown_type"
  /** A field is missing or has the wrong kind (or the message is not a JSON object). */
  | "invalid_message"
  /** The channel name breaks the channel-name rules. */
  | "invalid_channel"
  /** The message is larger than the server accepts. */
  | "too_large"
  /** The connection's token does not allow this action on this channel. */
  | "forbidden"
  /** Too many publishes per second on this connection. */
  | "rate_limited"
  /** `unsubscribe` for a channel this connection is not subscribed to. */
  | "not_subscribed"
  /** `subscribe` for a channel this connection is already subscribed to. */
  | "already_subscribed"
  /** The connection holds as many subscriptions as the server allows. */
  | "too_many_subscriptions"
  /** A binary frame: protocol v1 carries JSON in text frames only. */
  | "binary_not_supported"
  /** A token in `refresh` (or at the upgrade) is invalid or expired. */
  | "unauthorized"
  /** The server could not complete the request (e.g. its broker is unreachable). */
  | "internal"
  /**
   * `presence` (or `GET /api/presence`) for a channel without presence (no `[[channels]]`
   * table with `presence = true` matches it).
   */
  | "presence_disabled"
  /** A code this version of the library does not know (sent by a newer server). */
  | "unknown";

/** One message of a history page: the same object as the WebSocket `message` delivery. */
export interface HistoryMessage {
  /** Always `"message"`. */
  readonly type: MessageKind;
  /** The channel. */
  readonly channel: string;
  /** The published data, verbatim. */
  readonly data: unknown;
  /** The message's offset in the channel's stream. */
  readonly offset: number;
}

/**
 * A member of a presence channel: one connection, with the user and optional `info` of its
 * token.
 */
export interface Member {
  /** The connection's session id. */
  readonly client: string;
  /** The token's optional `info` claim. */
  readonly info?: unknown;
  /** The token's `sub`, or null for a connection without a token. */
  readonly user: string | null;
}

/** The `type` of a [`HistoryMessage`]: only `"message"`. */
export type MessageKind =
  /** A published message. */
  | "message";

/** The server's figures at one moment (the same as the `/metrics` lines of the same names). */
export interface StatsSample {
  /** Bytes written to clients. */
  readonly bytes_out_total: number;
  /** Channels with local subscribers. */
  readonly channels: number;
  /** Open WebSocket connections. */
  readonly connections: number;
  /** WebSocket connections accepted since start. */
  readonly connections_total: number;
  /** Message deliveries queued for subscribers. */
  readonly delivered_total: number;
  /** Connections ended because a pong did not arrive. */
  readonly heartbeat_terminations_total: number;
  /** Client messages received. */
  readonly messages_in_total: number;
  /** Messages published (WebSocket and HTTP). */
  readonly published_total: number;
  /** Connections cut off as slow consumers (close 4100). */
  readonly slow_consumers_total: number;
  /** Subscriptions held on this node. */
  readonly subscriptions: number;
  /** When, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
}

/**
 * A position in a channel's stream: the stream's `epoch` and an `offset` in it.
 *
 * Offsets start at 1 for the first message of an epoch and increase by one per message. An
 * epoch changes when the stream's history is lost (e.g. the in-memory broker restarted), so
 * offsets from another epoch say nothing about what was missed.
 */
export interface StreamPosition {
  /** The stream's epoch. */
  readonly epoch: string;
  /** The offset of the last message seen (0 when none). */
  readonly offset: number;
}

/** A WebSocket connection was established. */
export interface ConnectWebhookEvent {
  readonly type: "connect";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** Its session id (`welcome.session`). */
  readonly client: string;
  /** The token's `sub`, or null without a token. */
  readonly user?: string;
}

/** A connection ended. */
export interface DisconnectWebhookEvent {
  readonly type: "disconnect";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** Its session id. */
  readonly client: string;
  /** The close code (1006: lost without a close handshake). */
  readonly code: number;
  /** Why, for people. */
  readonly reason: string;
  /** The token's `sub`, or null without a token. */
  readonly user?: string;
}

/** A connection subscribed to a channel. */
export interface SubscribeWebhookEvent {
  readonly type: "subscribe";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
  /** The session id. */
  readonly client: string;
}

/** A subscription ended (`unsubscribe`, a revoked permission, or the connection's end). */
export interface UnsubscribeWebhookEvent {
  readonly type: "unsubscribe";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
  /** The session id. */
  readonly client: string;
}

/** The channel got its first subscriber anywhere in the cluster. */
export interface ChannelOccupiedWebhookEvent {
  readonly type: "channel_occupied";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
}

/** The channel's last subscriber anywhere in the cluster is gone (debounced). */
export interface ChannelVacatedWebhookEvent {
  readonly type: "channel_vacated";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
}

/** A member joined a presence channel. */
export interface MemberJoinWebhookEvent {
  readonly type: "member_join";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
  /** Who. */
  readonly member: Member;
}

/** A member left a presence channel. */
export interface MemberLeaveWebhookEvent {
  readonly type: "member_leave";
  /** Unique per event; a retried request carries the same ids. */
  readonly id: string;
  /** When it happened, in milliseconds since the Unix epoch. */
  readonly time_ms: number;
  /** The channel. */
  readonly channel: string;
  /** Who. */
  readonly member: Member;
}

/** One lifecycle event. */
export type WebhookEvent =
  | ConnectWebhookEvent
  | DisconnectWebhookEvent
  | SubscribeWebhookEvent
  | UnsubscribeWebhookEvent
  | ChannelOccupiedWebhookEvent
  | ChannelVacatedWebhookEvent
  | MemberJoinWebhookEvent
  | MemberLeaveWebhookEvent;

/** The claims wirehub reads from a token. Other claims in a token are ignored. */
export interface Claims {
  /** Expiry, seconds since the Unix epoch (required). */
  readonly exp: number;
  /** Issued at, seconds since the Unix epoch (informative; not checked). */
  readonly iat?: number;
  /**
   * Anything the issuer wants other members of a presence channel to see about the
   * holder (a display name, an avatar): the `info` of its presence member, verbatim.
   */
  readonly info?: unknown;
  /** Not valid before, seconds since the Unix epoch. */
  readonly nbf?: number;
  /** Channel patterns the holder may publish to. */
  readonly publish?: readonly string[];
  /** The user id. */
  readonly sub: string;
  /** Channel patterns the holder may subscribe to. */
  readonly subscribe?: readonly string[];
}

/** Start receiving a channel's messages; with `since`, first replay what was missed. */
export interface SubscribeClientMessage {
  readonly type: "subscribe";
  /** The channel. */
  readonly channel: string;
  /** Echoed on the reply. */
  readonly id?: number;
  /** The last position the client saw, to recover what it missed. */
  readonly since?: StreamPosition;
}

/** Stop receiving a channel's messages. */
export interface UnsubscribeClientMessage {
  readonly type: "unsubscribe";
  /** The channel. */
  readonly channel: string;
  /** Echoed on the reply. */
  readonly id?: number;
}

/** Publish `data` to every subscriber of `channel`. */
export interface PublishClientMessage {
  readonly type: "publish";
  /** The channel. */
  readonly channel: string;
  /** Any JSON value, delivered verbatim. */
  readonly data: unknown;
  /** Echoed on the `ack`. */
  readonly id?: number;
  /**
   * Makes a retried publish safe: while a message published with the same key is still
   * in the channel's history, the server does not publish again but acknowledges with
   * that message's offset (and `duplicate: true`). 1 to 64 visible ASCII characters.
   */
  readonly idempotency_key?: string;
}

/** Ask for a `pong` (liveness check for clients that cannot see WebSocket pings). */
export interface PingClientMessage {
  readonly type: "ping";
  /** Echoed on the `pong`. */
  readonly id?: number;
}

/** Replace the connection's token before it expires. */
export interface RefreshClientMessage {
  readonly type: "refresh";
  /** Echoed on the reply. */
  readonly id?: number;
  /** The new token. */
  readonly token: string;
}

/**
 * Ask for the members of a presence channel (a `presence` reply). Needs the permission
 * to subscribe to the channel, not a subscription.
 */
export interface PresenceClientMessage {
  readonly type: "presence";
  /** The channel. */
  readonly channel: string;
  /** Echoed on the reply. */
  readonly id?: number;
}

/** A request from a client. */
export type ClientMessage =
  | SubscribeClientMessage
  | UnsubscribeClientMessage
  | PublishClientMessage
  | PingClientMessage
  | RefreshClientMessage
  | PresenceClientMessage;

/**
 * The query of `GET /api/channels[?prefix=P][&after=C][&limit=N]`: the channels with
 * subscribers, in name order, a page at a time.
 */
export interface ChannelsQuery {
  /** The page after this channel name (the previous page's `next`). */
  readonly after?: string;
  /**
   * At most this many channels (default [`ChannelsQuery::DEFAULT_LIMIT`], at most
   * [`ChannelsQuery::MAX_LIMIT`]).
   */
  readonly limit?: number;
  /** Only channels whose name starts with this (default: all). */
  readonly prefix?: string;
}

/** The reply to `GET /api/channels` (HTTP 200). */
export interface ChannelsReply {
  /** The channels of this page, in name order. */
  readonly channels: readonly ChannelInfo[];
  /**
   * Whether `subscribers` counts the subscriptions of every node (Redis broker) or of the
   * node that answered only.
   */
  readonly cluster_wide: boolean;
  /** Where the next page starts (pass it as `after`); absent on the last page. */
  readonly next?: string;
}

/** The reply to `POST /api/disconnect` (HTTP 200). */
export interface DisconnectReply {
  /**
   * Connections closed on the node that answered; the other nodes (Redis broker) close
   * theirs as the order reaches them, without counting here.
   */
  readonly disconnected: number;
}

/**
 * The body of `POST /api/disconnect`: `{"user": U}` or `{"client": SESSION}`, optionally
 * with the close `code` and `reason` the connections get.
 */
export interface DisconnectRequest {
  /** Close the connection with this session id (`welcome.session`). */
  readonly client?: string;
  /** The close code: 1000, 1001, or 4000-4299 (default 4003: do not reconnect). */
  readonly code?: number;
  /**
   * The close reason, at most [`DisconnectRequest::MAX_REASON`] bytes (default
   * `disconnected by the server`).
   */
  readonly reason?: string;
  /** Close every connection whose token's `sub` is this. */
  readonly user?: string;
}

/**
 * The body of every HTTP API error (status 4xx or 5xx):
 * `{"error": {"code": CODE, "message": TEXT}}`, with the same codes as the WebSocket `error`.
 */
export interface ApiError {
  /** What went wrong. */
  readonly error: ApiErrorDetail;
}

/** The query of `GET /api/history?channel=C[&since=N][&epoch=E][&limit=M]`. */
export interface HistoryQuery {
  /** The channel. */
  readonly channel: string;
  /** The epoch `since` belongs to (default: the stream's current epoch). */
  readonly epoch?: string;
  /**
   * At most this many messages (default [`HistoryQuery::DEFAULT_LIMIT`], at most
   * [`HistoryQuery::MAX_LIMIT`]).
   */
  readonly limit?: number;
  /** Return the kept messages after this offset (default 0: everything kept). */
  readonly since?: number;
}

/**
 * The reply to `GET /api/history` (HTTP 200): the channel's position and a page of the kept
 * messages, oldest first.
 */
export interface HistoryReply {
  /** The channel. */
  readonly channel: string;
  /**
   * Whether the page starts right after `since`: false when messages after it have left
   * the history (or the epoch changed), so some cannot be returned.
   */
  readonly complete: boolean;
  /** The stream's current epoch. */
  readonly epoch: string;
  /** The messages, each as the WebSocket `message` delivery. */
  readonly messages: readonly HistoryMessage[];
  /** The stream's current offset (its latest message; 0 when none). */
  readonly offset: number;
}

/** The query of `GET /api/presence?channel=C`. */
export interface PresenceQuery {
  /** The channel. */
  readonly channel: string;
}

/** The reply to `GET /api/presence` (HTTP 200), the same fields as the `presence` message. */
export interface PresenceReply {
  /** The channel. */
  readonly channel: string;
  /** How many members the channel has (exact, also when the list is truncated). */
  readonly count: number;
  /** The members, at most the server's `presence_max_members`. */
  readonly members: readonly Member[];
  /** True when `members` lists fewer than `count`. */
  readonly truncated?: boolean;
}

/** The reply to `POST /api/publish` (HTTP 200): the offset the message was given. */
export interface PublishReply {
  /**
   * True when the `idempotency_key` was already used by a message still in the history:
   * nothing was published again.
   */
  readonly duplicate?: boolean;
  /** The offset assigned to the published message (or, for a duplicate, the original's). */
  readonly offset: number;
}

/** The body of `POST /api/publish`: `{"channel": C, "data": ANY[, "idempotency_key": K]}`. */
export interface PublishRequest {
  /** The channel. */
  readonly channel: string;
  /** Any JSON value, delivered verbatim. */
  readonly data: unknown;
  /**
   * Makes a retried publish safe, as in the WebSocket `publish`: while a message published
   * with the same key is still in the channel's history, the reply carries that message's
   * offset and `duplicate: true`. 1 to 64 visible ASCII characters.
   */
  readonly idempotency_key?: string;
}

/** The query of `GET /api/stats[?since=T]`. */
export interface StatsQuery {
  /**
   * Only the samples taken after this time (`time_ms` of the last sample already seen);
   * default: every sample kept.
   */
  readonly since?: number;
}

/** The reply to `GET /api/stats` (HTTP 200). */
export interface StatsReply {
  /** The broker. */
  readonly broker: BrokerStats;
  /** Connections closed, by close code (every code the server uses, also those at 0). */
  readonly closes: readonly CloseCount[];
  /** Milliseconds between two samples. */
  readonly interval_ms: number;
  /** The figures at the time of this reply. */
  readonly now: StatsSample;
  /** Whether the node serves fully: what `GET /readyz` answers with 200. */
  readonly ready: boolean;
  /**
   * The samples taken every `interval_ms` (after `since`, when given), oldest first: at
   * most [`StatsReply::MAX_SAMPLES`], the last minutes.
   */
  readonly samples: readonly StatsSample[];
  /** How long the server has been running, in milliseconds. */
  readonly uptime_ms: number;
}

/** One webhook request's body. */
export interface WebhookBatch {
  /** The events, in the order they happened on the node that sent them. */
  readonly events: readonly WebhookEvent[];
}

/** The first message on every connection. */
export interface WelcomeServerMessage {
  readonly type: "welcome";
  /**
   * The heartbeat interval in seconds: a client that saw nothing for about twice this
   * long may assume the server is gone. Whole seconds are written as an integer.
   */
  readonly heartbeat: number;
  /** The connection's session id (also in the server's logs). */
  readonly session: string;
  /** The protocol version ([`crate::PROTOCOL_VERSION`]). */
  readonly version: number;
}

/** The reply to `subscribe`. */
export interface SubscribedServerMessage {
  readonly type: "subscribed";
  /** The channel. */
  readonly channel: string;
  /** The channel stream's current epoch. */
  readonly epoch: string;
  /** The request's id. */
  readonly id?: number;
  /**
   * The offset of the channel's latest message when the subscription took effect (0
   * when none); replayed messages, after a recovery, lead up to it.
   */
  readonly offset: number;
  /**
   * Present when `since` was given: whether every missed message was replayed.
   * When false, the client missed messages it cannot get back and should reload state.
   */
  readonly recovered?: boolean;
}

/** The reply to `unsubscribe`. */
export interface UnsubscribedServerMessage {
  readonly type: "unsubscribed";
  /** The channel. */
  readonly channel: string;
  /** The request's id. */
  readonly id?: number;
}

/** A message published to a subscribed channel. */
export interface MessageServerMessage {
  readonly type: "message";
  /** The channel. */
  readonly channel: string;
  /** The published data, verbatim. */
  readonly data: unknown;
  /** The message's offset in the channel's stream (strictly increasing per epoch). */
  readonly offset: number;
}

/** The reply to `publish`: the message was accepted at this offset. */
export interface AckServerMessage {
  readonly type: "ack";
  /**
   * True when the publish carried an `idempotency_key` already used by a message still
   * in the channel's history: nothing was published again, `offset` is that message's.
   */
  readonly duplicate?: boolean;
  /** The request's id. */
  readonly id?: number;
  /** The offset assigned to the published message. */
  readonly offset: number;
}

/** The reply to `refresh`: the new token is in force. */
export interface RefreshedServerMessage {
  readonly type: "refreshed";
  /** When the new token expires, in seconds since the Unix epoch. */
  readonly expires: number;
  /** The request's id. */
  readonly id?: number;
}

/** The reply to `ping`. */
export interface PongServerMessage {
  readonly type: "pong";
  /** The request's id. */
  readonly id?: number;
}

/**
 * Publications of `channel` that this subscription will not be sent: its subscriber fell
 * behind under `on_slow = "gap"`, or a broker fault lost them. The subscription stays; the
 * client recovers what it can with `subscribe` + `since` (its last position).
 */
export interface GapServerMessage {
  readonly type: "gap";
  /** The channel. */
  readonly channel: string;
  /** The stream's epoch now. */
  readonly epoch: string;
  /** The first offset not sent, when known. */
  readonly from?: number;
  /** The stream's offset now (the last publication assigned). */
  readonly offset: number;
  /** The last offset not sent, when known. */
  readonly to?: number;
}

/** The reply to `presence`: the channel's members. */
export interface PresenceServerMessage {
  readonly type: "presence";
  /** The channel. */
  readonly channel: string;
  /** How many members the channel has (exact, also when the list is truncated). */
  readonly count: number;
  /** The request's id. */
  readonly id?: number;
  /** The members, at most the server's `presence_max_members`. */
  readonly members: readonly Member[];
  /** True when `members` lists fewer than `count`. */
  readonly truncated?: boolean;
}

/** A member joined a presence channel this connection is subscribed to. */
export interface JoinServerMessage {
  readonly type: "join";
  /** The channel. */
  readonly channel: string;
  /** Who joined. */
  readonly member: Member;
}

/**
 * A member left a presence channel this connection is subscribed to (its connection
 * unsubscribed or closed, or its lease expired after its node died).
 */
export interface LeaveServerMessage {
  readonly type: "leave";
  /** The channel. */
  readonly channel: string;
  /** Who left. */
  readonly member: Member;
}

/** A request could not be carried out; the connection stays open. */
export interface ErrorServerMessage {
  readonly type: "error";
  /** A stable snake_case code. */
  readonly code: ErrorCode;
  /** The id of the request that failed, when it had one. */
  readonly id?: number;
  /** An explanation for people. */
  readonly message: string;
}

/**
 * A message from the server.
 *
 * Deserializing works with `serde_json` and reads the text once, in any field order (see the
 * `Deserialize` impl below); a `message`'s `data` is kept as raw JSON, verbatim. Clients parse
 * every frame this way: `serde_json::from_str::<ServerMessage>(text)`.
 */
export type ServerMessage =
  | WelcomeServerMessage
  | SubscribedServerMessage
  | UnsubscribedServerMessage
  | MessageServerMessage
  | AckServerMessage
  | RefreshedServerMessage
  | PongServerMessage
  | GapServerMessage
  | PresenceServerMessage
  | JoinServerMessage
  | LeaveServerMessage
  | ErrorServerMessage;

/** The fields of each {@link WebhookEvent}, by `type`, for checking a received one at run time. */
export const webhookEventFields: { readonly [T in WebhookEvent["type"]]: { readonly [field: string]: FieldRule } } = {
  connect: { id: "string", time_ms: "offset", client: "string", user: "string?" },
  disconnect: { id: "string", time_ms: "offset", client: "string", code: "offset", reason: "string", user: "string?" },
  subscribe: { id: "string", time_ms: "offset", channel: "string", client: "string" },
  unsubscribe: { id: "string", time_ms: "offset", channel: "string", client: "string" },
  channel_occupied: { id: "string", time_ms: "offset", channel: "string" },
  channel_vacated: { id: "string", time_ms: "offset", channel: "string" },
  member_join: { id: "string", time_ms: "offset", channel: "string", member: "object" },
  member_leave: { id: "string", time_ms: "offset", channel: "string", member: "object" },
};

/** The fields of each {@link ClientMessage}, by `type`, for checking a received one at run time. */
export const clientMessageFields: { readonly [T in ClientMessage["type"]]: { readonly [field: string]: FieldRule } } = {
  subscribe: { channel: "string", id: "offset?", since: "object?" },
  unsubscribe: { channel: "string", id: "offset?" },
  publish: { channel: "string", data: "any", id: "offset?", idempotency_key: "string?" },
  ping: { id: "offset?" },
  refresh: { id: "offset?", token: "string" },
  presence: { channel: "string", id: "offset?" },
};

/** The fields of each {@link ServerMessage}, by `type`, for checking a received one at run time. */
export const serverMessageFields: { readonly [T in ServerMessage["type"]]: { readonly [field: string]: FieldRule } } = {
  welcome: { heartbeat: "number", session: "string", version: "offset" },
  subscribed: { channel: "string", epoch: "string", id: "offset?", offset: "offset", recovered: "boolean?" },
  unsubscribed: { channel: "string", id: "offset?" },
  message: { channel: "string", data: "any", offset: "offset" },
  ack: { duplicate: "boolean?", id: "offset?", offset: "offset" },
  refreshed: { expires: "offset", id: "offset?" },
  pong: { id: "offset?" },
  gap: { channel: "string", epoch: "string", from: "offset?", offset: "offset", to: "offset?" },
  presence: { channel: "string", count: "offset", id: "offset?", members: "array", truncated: "boolean?" },
  join: { channel: "string", member: "object" },
  leave: { channel: "string", member: "object" },
  error: { code: "string", id: "offset?", message: "string" },
};
