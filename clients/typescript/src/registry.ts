/**
 * What outlives a connection: the subscriptions, each with the last position it was handed,
 * and the publishes held while disconnected (or whose ack was lost with the connection).
 *
 * The registry decides what a `subscribed` reply, a delivery or a `gap` means for a
 * subscription (a duplicate, a recovery, a loss to report, a catch-up to start); the client's
 * connection loop only routes frames here and sends what the registry asks for.
 *
 * Flow control: a subscription whose queue is full refuses a message. The registry then stops
 * handing it messages (`paused`: they stay in the server's history) and, once the consumer
 * drained the queue to half, asks the client to catch up (`resync`: `unsubscribe`, then
 * `subscribe` with `since` = the last position the queue took). Until that `subscribed`
 * arrives every delivery is dropped, so that nothing is taken out of order; the replay then
 * goes through the same queue (a replay larger than it pauses again), offsets at or below the
 * position are dropped as duplicates, and `recovered: false` puts a `recoveryFailed` event in
 * the queue, at the place of the loss. A `gap` from the server starts the same catch-up.
 *
 * A `gap` that names a new epoch (the stream restarted, e.g. Redis lost its data) says where
 * the new epoch's deliveries go on: the catch-up from the old position gets `recovered:
 * false`, the loss is reported up to the gap's position, and a second catch-up from there
 * replays what the new epoch published meanwhile, so none of it falls inside the loss.
 *
 * A restoring or catching-up `subscribe` that the server refuses for a passing reason
 * ({@link isTransientRefusal}: its broker is unavailable, or a rate limit) keeps the
 * subscription: the client sends the same `subscribe` again later. Other refusals end it.
 */

import { WirehubError } from "./errors.js";
import type { StreamPosition } from "./protocol.js";
import type { Message, RecoveryFailed, Subscription } from "./subscription.js";

/** A request that settles once (with a timeout, see the client's `#request`). */
export interface Request<T> {
  resolve(value: T): void;
  reject(error: WirehubError): void;
  readonly done: boolean;
}

/** A channel the application subscribed to; kept across reconnects. */
export interface Registration {
  readonly channel: string;
  readonly subscription: Subscription<any>;
  /** The last position seen (from `subscribed` and every `message`). */
  position: StreamPosition | undefined;
  /** The `subscribe` caller still waiting for the first `subscribed`. */
  waiting: Request<Subscription<any>> | undefined;
  /** Whether `subscribe` was sent on the current connection. */
  sent: boolean;
  /** The id of the `subscribe` awaiting its answer. */
  inFlight: number | undefined;
  /**
   * `flowing`: deliveries go to the subscription's queue; `paused`: its queue refused one,
   * deliveries are dropped until it drained; `resyncing`: a `subscribe` with `since` is on
   * its way, deliveries are dropped until its `subscribed`.
   */
  flow: "flowing" | "paused" | "resyncing";
  /** Why it was paused (reported with the catch-up). */
  pausedBy: ResyncCause;
  /** Consecutive passing refusals of its `subscribe` (the retry schedule's `k`). */
  refusals: number;
  /** The timer of the next `subscribe` after a passing refusal. */
  retryTimer: unknown;
  /**
   * Where a new epoch goes on, as a `gap` announced it (its epoch differs from `position`):
   * a loss reported by the next `subscribed` ends there, and the catch-up continues from it.
   */
  epochStart: StreamPosition | undefined;
}

/**
 * Whether the server's refusal of a `subscribe` is passing: `internal` (e.g. "broker
 * unavailable" while Redis is down) and `rate_limited`. A restoring or catching-up subscribe
 * refused so is sent again after a backoff; any other code ends the subscription.
 */
export function isTransientRefusal(code: string): boolean {
  return code === "internal" || code === "rate_limited";
}

/** Why a subscription catches up from history while connected. */
export type ResyncCause =
  /** Its consumer fell behind: the subscription's queue was full. */
  | "slow_consumer"
  /** The server sent `gap`: it skipped publications for this subscription. */
  | "gap";

/** A publish waiting for a connection, or sent and waiting for its ack. */
export interface HeldPublish {
  readonly channel: string;
  /** The data, serialized when `publish` was called. */
  readonly json: string;
  /** Sent with the publish (and with its retries). */
  readonly key: string | undefined;
  readonly request: Request<number>;
  /** The id once sent. */
  id: number | undefined;
}

/** What the registry needs from the client: its events, and sending a catch-up. */
export interface RegistryHooks {
  recoveryFailed(payload: { channel: string; since: StreamPosition; position: StreamPosition }): void;
  /** A `subscribe` with `since` was answered and nothing was lost (the replay follows). */
  recovered(payload: { channel: string; since: StreamPosition; position: StreamPosition }): void;
  subscriptionEnded(payload: { channel: string; error: WirehubError }): void;
  /**
   * Catch `registration` up from its position now (`unsubscribe`, then `subscribe` with
   * `since`); nothing to send while disconnected (the next connection's resubscription does it).
   */
  resync(registration: Registration, cause: ResyncCause): void;
  /**
   * The server refused `registration`'s `subscribe` for a passing reason: send it again
   * (same `since`) after the subscribe backoff, on the same connection.
   */
  retry(registration: Registration, error: WirehubError): void;
}

/** The subscriptions and the publish buffer of one client. */
export class Registry {
  readonly #subscriptions = new Map<string, Registration>();
  #held: HeldPublish[] = [];
  readonly #hooks: RegistryHooks;

  constructor(hooks: RegistryHooks) {
    this.#hooks = hooks;
  }

  // ---- subscriptions ----------------------------------------------------------------------

  /** The registration of `channel`, if there is one. */
  get(channel: string): Registration | undefined {
    return this.#subscriptions.get(channel);
  }

  /** Whether `channel` has a registration. */
  has(channel: string): boolean {
    return this.#subscriptions.has(channel);
  }

  /** Registers a new subscription (not sent yet). */
  add(channel: string, subscription: Subscription<any>): Registration {
    const registration: Registration = {
      channel,
      subscription,
      position: undefined,
      waiting: undefined,
      sent: false,
      inFlight: undefined,
      flow: "flowing",
      pausedBy: "slow_consumer",
      refusals: 0,
      retryTimer: undefined,
      epochStart: undefined,
    };
    this.#subscriptions.set(channel, registration);
    return registration;
  }

  /** Removes `registration` when it is still the one of its channel; says whether it was. */
  remove(registration: Registration): boolean {
    if (this.#subscriptions.get(registration.channel) !== registration) return false;
    this.#subscriptions.delete(registration.channel);
    return true;
  }

  /** Every registration, in the order they were made. */
  registrations(): Registration[] {
    return [...this.#subscriptions.values()];
  }

  /** The position of `channel` while `subscription` is the one registered for it. */
  positionOf(channel: string, subscription: Subscription<any>): StreamPosition | undefined {
    const registration = this.#subscriptions.get(channel);
    return registration?.subscription === subscription ? registration.position : undefined;
  }

  /**
   * The `subscribed` reply to the `subscribe` with `id`: settles the waiting caller, keeps or
   * moves the position, and reports a loss the reply reveals.
   */
  subscribed(channel: string, id: number, position: StreamPosition, recovered: boolean | undefined): void {
    const registration = this.#subscriptions.get(channel);
    if (registration === undefined || registration.inFlight !== id) return;
    registration.inFlight = undefined;
    registration.flow = "flowing";
    registration.refusals = 0;
    let current: StreamPosition = { epoch: position.epoch, offset: position.offset };
    const since = registration.position;
    const epochStart = registration.epochStart;
    registration.epochStart = undefined;
    let lost: boolean;
    if (since === undefined) {
      lost = false;
    } else if (recovered === false) {
      lost = true;
    } else if (recovered === true) {
      // The replayed messages follow this reply and advance the offset themselves.
      lost = since.epoch !== current.epoch;
    } else {
      // A server that does not say: only an unchanged position proves nothing was missed.
      lost = since.epoch !== current.epoch || since.offset !== current.offset;
    }
    // The new epoch a `gap` announced published after where it goes on: those messages are in
    // its history, not lost. The loss ends at the gap's position; a catch-up from there follows.
    const resume =
      since !== undefined &&
      lost &&
      epochStart !== undefined &&
      epochStart.epoch === current.epoch &&
      epochStart.epoch !== since.epoch &&
      epochStart.offset < current.offset;
    if (resume) current = { epoch: epochStart.epoch, offset: epochStart.offset };
    if (since !== undefined && !lost && since.epoch === current.epoch) {
      registration.position = since;
    } else {
      registration.position = current;
    }
    const waiting = registration.waiting;
    registration.waiting = undefined;
    waiting?.resolve(registration.subscription);
    if (since !== undefined && lost) {
      const event: RecoveryFailed = { type: "recoveryFailed", channel, since, position: current };
      this.#hooks.recoveryFailed({ channel, since, position: current });
      // Taken even by a full queue: it belongs after what the queue holds, and there is at
      // most one per `subscribed`.
      registration.subscription.report(event);
    }
    if (since !== undefined && !lost) {
      this.#hooks.recovered({ channel, since, position: current });
    }
    if (resume) {
      // Deliveries wait for the catch-up's `subscribed` (history has them).
      registration.flow = "resyncing";
      this.#hooks.resync(registration, "gap");
    }
  }

  /**
   * A `message` frame: handed to the subscription's queue unless it is a duplicate, or the
   * subscription is catching up (then history has it).
   */
  delivery(channel: string, data: unknown, offset: number): void {
    const registration = this.#subscriptions.get(channel);
    if (registration === undefined || registration.flow !== "flowing") return;
    const position = registration.position;
    if (position !== undefined && offset <= position.offset) {
      // A duplicate (e.g. a live delivery also replayed): dropped.
      return;
    }
    const message: Message = { type: "message", channel, data, offset };
    if (!registration.subscription.offer(message)) {
      // The queue is full: this and what follows stay in the server's history until the
      // consumer drained the queue (see `drained`).
      registration.flow = "paused";
      registration.pausedBy = "slow_consumer";
      return;
    }
    if (position !== undefined) {
      registration.position = { epoch: position.epoch, offset };
    }
  }

  /**
   * A `gap` frame: the server skipped publications for this subscription. It catches up from
   * its position once its queue has room (at once when it has).
   */
  gap(channel: string, epoch: string, offset: number): void {
    const registration = this.#subscriptions.get(channel);
    const position = registration?.position;
    if (registration !== undefined && position !== undefined && position.epoch !== epoch) {
      // Kept whatever the flow: the catch-up's `subscribed` needs it (see `subscribed`).
      registration.epochStart = { epoch, offset };
    }
    // While paused or resyncing a catch-up is coming anyway; before the first `subscribed`
    // there is no position to catch up from (and the server sends none).
    if (registration === undefined || registration.flow !== "flowing" || registration.position === undefined) {
      return;
    }
    registration.flow = "paused";
    registration.pausedBy = "gap";
    registration.subscription.awaitRoom();
  }

  /** Marks a registration whose `subscribe` is being sent: a paused one is now catching up. */
  sending(registration: Registration): void {
    if (registration.flow === "paused") registration.flow = "resyncing";
  }

  /**
   * The server refused the `subscribe` with `id`. A first `subscribe` whose caller waits
   * rejects with `error`; a restoring or catching-up one refused for a passing reason
   * ({@link isTransientRefusal}) stays, to be sent again; otherwise the subscription ends
   * with `error`.
   */
  refused(channel: string, id: number, error: WirehubError): void {
    const registration = this.#subscriptions.get(channel);
    if (registration === undefined || registration.inFlight !== id) return;
    const refusal = withChannel(error, channel);
    if (registration.waiting === undefined && isTransientRefusal(error.code)) {
      registration.inFlight = undefined;
      // The server holds no subscription now: nothing to unsubscribe, no catch-up to send,
      // and nothing is delivered until the retry's `subscribed`.
      registration.sent = false;
      registration.flow = "resyncing";
      this.#hooks.retry(registration, refusal);
      return;
    }
    this.#subscriptions.delete(channel);
    this.#end(registration, refusal);
  }

  /** The server ended the subscription on its own (an unasked `unsubscribed`). */
  revoked(channel: string): void {
    const registration = this.#subscriptions.get(channel);
    if (registration === undefined) return;
    this.#subscriptions.delete(channel);
    this.#end(
      registration,
      new WirehubError("revoked", `the server ended the subscription to ${JSON.stringify(channel)}`, {
        channel,
      }),
    );
  }

  // ---- publishes ------------------------------------------------------------------------

  /** How many publishes are held. */
  get heldCount(): number {
    return this.#held.length;
  }

  /** Holds a publish until the next connection. */
  hold(publish: HeldPublish): void {
    this.#held.push(publish);
  }

  /** Takes the held publishes, in order, leaving none held. */
  takeHeld(): HeldPublish[] {
    const held = this.#held;
    this.#held = [];
    return held;
  }

  /** Forgets a held publish whose caller gave up. */
  forget(publish: HeldPublish): void {
    this.#held = this.#held.filter((held) => held !== publish);
  }

  // ---- connection ends ------------------------------------------------------------------

  /**
   * The connection ended: the publishes sent on it and not acknowledged are held again, first
   * and in the order they were sent, and every subscription is to be sent again.
   */
  connectionEnded(unacknowledged: HeldPublish[]): void {
    unacknowledged.sort((a, b) => (a.id ?? 0) - (b.id ?? 0));
    for (const publish of unacknowledged) publish.id = undefined;
    this.#held.unshift(...unacknowledged);
    for (const registration of this.#subscriptions.values()) {
      registration.sent = false;
      registration.inFlight = undefined;
    }
  }

  /**
   * The client stopped: held publishes and waiting subscribers fail with `failure`, every
   * subscription ends (with `error`, undefined when the application closed the client).
   */
  stop(failure: WirehubError, error: WirehubError | undefined): void {
    for (const publish of this.#held) publish.request.reject(failure);
    this.#held = [];
    const registrations = [...this.#subscriptions.values()];
    this.#subscriptions.clear();
    for (const registration of registrations) {
      if (registration.waiting !== undefined) {
        registration.waiting.reject(failure);
      } else {
        registration.subscription.end(error);
      }
    }
  }

  /** A paused subscription's queue has room again: catch it up now if connected. */
  drained(channel: string, subscription: Subscription<any>): void {
    const registration = this.#subscriptions.get(channel);
    if (registration?.subscription !== subscription || registration.flow !== "paused") {
      return;
    }
    // `resync` sends the `subscribe`, which moves the registration to `resyncing`; while
    // disconnected it stays paused and the next connection's resubscription catches it up.
    this.#hooks.resync(registration, registration.pausedBy);
  }

  /** Ends a removed registration with an error: the waiting caller gets it, or the subscription ends with it. */
  #end(registration: Registration, error: WirehubError): void {
    const waiting = registration.waiting;
    registration.waiting = undefined;
    if (waiting !== undefined) {
      waiting.reject(error);
      return;
    }
    registration.subscription.end(error);
    this.#hooks.subscriptionEnded({ channel: registration.channel, error });
  }
}

function withChannel(error: WirehubError, channel: string): WirehubError {
  return new WirehubError(error.code, error.message, { fromServer: error.fromServer, channel });
}
