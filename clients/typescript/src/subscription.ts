/**
 * A channel subscription as the application holds it: the handlers given to `subscribe` and
 * an async iterator, fed in order from one bounded queue.
 *
 * The queue never drops what it took. When it is full it refuses the next message
 * ({@link Subscription.offer} returns `false`); the registry then stops handing it messages,
 * and once the consumer has drained the queue to half, the subscription says so
 * (`SubscriptionControl.drained`) and the client catches up from the server's history, from
 * the last position the queue took. So a consumer that falls behind gets every message in
 * order, or a `recoveryFailed` event at the place of the loss, never a silent drop.
 */

import type { WirehubError } from "./errors.js";
import { reportListenerError } from "./platform.js";
import type { StreamPosition } from "./protocol.js";

/** One delivered message. */
export interface Message<T = unknown> {
  readonly type: "message";
  readonly channel: string;
  /** The published JSON value, parsed. */
  readonly data: T;
  readonly offset: number;
}

/**
 * Messages of this subscription are lost and cannot be recovered: the server's history no
 * longer holds them (history too short or expired, or a new epoch after a restart). It comes
 * in order: every message before it was delivered, the messages after it follow `position`.
 * The application should reload its state.
 */
export interface RecoveryFailed {
  readonly type: "recoveryFailed";
  readonly channel: string;
  /** The last position handed to the application. */
  readonly since: StreamPosition;
  /** The stream's position when the loss was found; deliveries go on after it. */
  readonly position: StreamPosition;
}

/**
 * No longer produced: a subscription whose consumer falls behind catches up from the server's
 * history instead of dropping messages (or gets {@link RecoveryFailed} where history ends).
 * @deprecated Kept so that code handling it still compiles.
 */
export interface Lagged {
  readonly type: "lagged";
  readonly missed: number;
}

/** What a subscription's async iterator yields. */
export type SubscriptionEvent<T = unknown> = Message<T> | RecoveryFailed | Lagged;

/**
 * Callbacks given to `subscribe`. A callback that returns a promise holds the subscription's
 * next event until the promise settles (the events wait in the subscription's bounded queue).
 */
export interface SubscriptionHandlers<T = unknown> {
  /** Each delivered message, in offset order, without duplicates. */
  onMessage?: (message: Message<T>) => unknown;
  /** Messages of this channel were lost (see {@link RecoveryFailed}), in order with the messages. */
  onRecoveryFailed?: (event: RecoveryFailed) => unknown;
  /**
   * The subscription ended: `error` is undefined after `unsubscribe()` or `close()`. Called
   * once the events queued before the end were handed to the callbacks.
   */
  onEnded?: (error: WirehubError | undefined) => void;
}

/** What a subscription needs from its client. */
export interface SubscriptionControl {
  unsubscribe(): Promise<void>;
  position(): StreamPosition | undefined;
  /** The queue refused a message (or a catch-up was asked for) and now has room again. */
  drained(): void;
}

/** An event in the queue; `handled` once the callbacks had it. */
interface Entry<T> {
  readonly event: Message<T> | RecoveryFailed;
  handled: boolean;
}

/**
 * A channel subscription: the handlers given to `subscribe` are called for each delivery, and
 * the subscription is also an async iterable of {@link SubscriptionEvent}s (one reader). Each
 * event goes to the callbacks, then to the iterator when one is reading; the slower of the two
 * sets the pace. Created by `WirehubClient.subscribe`.
 */
export class Subscription<T = unknown> implements AsyncIterable<SubscriptionEvent<T>> {
  readonly channel: string;
  readonly #control: SubscriptionControl;
  readonly #handlers: SubscriptionHandlers<T>;
  readonly #capacity: number;
  /** At or below this many queued events, a refusing queue has room again. */
  readonly #lowWater: number;
  /** Whether events wait in the queue for the async iterator. */
  #iterating: boolean;
  readonly #queue: Entry<T>[] = [];
  /** A message was refused (or a catch-up asked for) since the queue last had room. */
  #refused = false;
  /** A callback's promise is pending: the next event waits. */
  #busy = false;
  #pumping = false;
  #wake: (() => void) | undefined;
  #ended = false;
  #endReported = false;
  #error: WirehubError | undefined;

  /** Created by `WirehubClient.subscribe`; not meant to be called by applications. */
  constructor(
    channel: string,
    control: SubscriptionControl,
    handlers: SubscriptionHandlers<T>,
    capacity: number,
  ) {
    this.channel = channel;
    this.#control = control;
    this.#handlers = handlers;
    this.#capacity = Math.max(1, capacity);
    this.#lowWater = Math.floor(this.#capacity / 2);
    // Without a message callback the iterator is the only consumer: queue from the start.
    this.#iterating = handlers.onMessage === undefined;
  }

  /** The last position handed to the application's side (from `subscribed` and every message taken). */
  get position(): StreamPosition | undefined {
    return this.#control.position();
  }

  /** Whether the subscription is still in place (it has not ended). */
  get active(): boolean {
    return !this.#ended;
  }

  /** The error that ended the subscription, if one did. */
  get error(): WirehubError | undefined {
    return this.#error;
  }

  /** Events received and not yet consumed (at most the `subscriptionBuffer` option, plus loss reports). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Ends the subscription (resolves once the server confirmed, or at once when offline). */
  unsubscribe(): Promise<void> {
    return this.#control.unsubscribe();
  }

  /**
   * Iterates over deliveries and recovery failures. The loop ends when the subscription ends
   * (it throws the error when one ended it); leaving the loop early unsubscribes.
   */
  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent<T>> {
    this.#iterating = true;
    return {
      next: () => this.#next(),
      return: async () => {
        // Events no longer wait for this reader (the callbacks, if any, still get them).
        this.#iterating = false;
        if (!this.#ended) {
          // Does not wait for the server's confirmation; a failure there changes nothing here.
          this.unsubscribe().catch(() => {});
        }
        this.#pump();
        return { done: true, value: undefined };
      },
    };
  }

  /**
   * @internal Offers a message: `false` when the queue is full and did not take it (the
   * caller catches up from history once {@link SubscriptionControl.drained} is called).
   */
  offer(message: Message<T>): boolean {
    if (this.#ended) return true;
    if (this.#queue.length >= this.#capacity) {
      this.#refused = true;
      return false;
    }
    this.#queue.push({ event: message, handled: false });
    this.#pump();
    return true;
  }

  /**
   * @internal A loss report: always taken, even by a full queue. Two reports with no message
   * between them are one loss (from the first's `since` to the second's `position`), so the
   * queue holds at most one more than its capacity however often the connection drops.
   */
  report(event: RecoveryFailed): void {
    if (this.#ended) return;
    const last = this.#queue.at(-1);
    if (last !== undefined && !last.handled && last.event.type === "recoveryFailed") {
      this.#queue[this.#queue.length - 1] = {
        event: { ...event, since: last.event.since },
        handled: false,
      };
    } else {
      this.#queue.push({ event, handled: false });
    }
    this.#pump();
  }

  /** @internal Asks for {@link SubscriptionControl.drained} once the queue has room (at once if it has). */
  awaitRoom(): void {
    this.#refused = true;
    this.#checkRoom();
  }

  /**
   * @internal The subscription ended (`error` undefined: asked for). What was queued before
   * is still handed over, then `onEnded` is called and the iterator finishes.
   */
  end(error?: WirehubError): void {
    if (this.#ended) {
      return;
    }
    this.#ended = true;
    this.#error = error;
    this.#pump();
    this.#wakeReader();
  }

  /** @internal Ended before it was handed out (its `subscribe` call failed): no callbacks. */
  discard(): void {
    this.#ended = true;
    this.#endReported = true;
    this.#queue.length = 0;
    this.#wakeReader();
  }

  /** Hands queued events to the callbacks, in order, waiting for the promises they return. */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.#busy) {
        const head = this.#queue[0];
        if (head === undefined) break;
        if (!head.handled) {
          head.handled = true;
          const result = this.#callHandler(head.event);
          if (isThenable(result)) {
            this.#busy = true;
            const done = (): void => {
              this.#busy = false;
              this.#pump();
            };
            result.then(done, (error: unknown) => {
              reportListenerError(error);
              done();
            });
            break;
          }
        }
        if (this.#iterating) {
          // The head waits for the reader.
          break;
        }
        this.#queue.shift();
        this.#checkRoom();
      }
    } finally {
      this.#pumping = false;
    }
    const head = this.#queue[0];
    if (head !== undefined && head.handled && !this.#busy) this.#wakeReader();
    this.#reportEnd();
  }

  #callHandler(event: Message<T> | RecoveryFailed): unknown {
    try {
      return event.type === "message"
        ? this.#handlers.onMessage?.(event)
        : this.#handlers.onRecoveryFailed?.(event);
    } catch (error) {
      reportListenerError(error);
      return undefined;
    }
  }

  /** Calls `onEnded` once, after the callbacks had everything queued before the end. */
  #reportEnd(): void {
    if (!this.#ended || this.#endReported || this.#busy) return;
    if (this.#queue.some((entry) => !entry.handled)) return;
    this.#endReported = true;
    try {
      this.#handlers.onEnded?.(this.#error);
    } catch (thrown) {
      reportListenerError(thrown);
    }
  }

  #checkRoom(): void {
    if (this.#refused && !this.#ended && this.#queue.length <= this.#lowWater) {
      this.#refused = false;
      this.#control.drained();
    }
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #next(): Promise<IteratorResult<SubscriptionEvent<T>, undefined>> {
    for (;;) {
      const head = this.#queue[0];
      if (head !== undefined && head.handled && !this.#busy) {
        this.#queue.shift();
        this.#checkRoom();
        this.#pump();
        return { done: false, value: head.event };
      }
      if (head === undefined && this.#ended) {
        if (this.#error !== undefined) {
          throw this.#error;
        }
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === "object" || typeof value === "function") &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
