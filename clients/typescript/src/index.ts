export {
  WirehubClient,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type Presence,
} from "./client.js";
export type { ResyncCause } from "./registry.js";
export {
  DEFAULT_BACKOFF,
  DEFAULT_SUBSCRIBE_BACKOFF,
  ReconnectSchedule,
  adviceForCloseCode,
  backoffCeiling,
  backoffDelay,
  type Backoff,
  type Jitter,
  type ReconnectAdvice,
} from "./backoff.js";
export {
  WirehubError,
  type ClientErrorCode,
  type WirehubErrorCode,
  type WirehubErrorDetails,
} from "./errors.js";
export type { Clock, NetworkEvents, WebSocketConstructor, WebSocketLike } from "./platform.js";
export {
  isValidChannel,
  isValidIdempotencyKey,
  parseServerMessage,
  type AckMessage,
  type ClientMessage,
  type ErrorMessage,
  type GapMessage,
  type JoinMessage,
  type LeaveMessage,
  type Member,
  type PresenceMessage,
  type MessageMessage,
  type ParseResult,
  type PongMessage,
  type RefreshedMessage,
  type ServerErrorCode,
  type ServerMessage,
  type StreamPosition,
  type SubscribedMessage,
  type UnsubscribedMessage,
  type WelcomeMessage,
} from "./protocol.js";
export {
  Subscription,
  type Lagged,
  type Message,
  type RecoveryFailed,
  type SubscriptionEvent,
  type SubscriptionHandlers,
} from "./subscription.js";
