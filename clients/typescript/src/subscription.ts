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
 * After a reconnect the server could not replay what this subscription missed (history too
 * short, or a new epoch after a restart): the application should reload its state.
 */
export interface RecoveryFailed {
  readonly type: "recoveryFailed";
  readonly channel: string;
  /** The last position the client had seen. */
  readonly since: StreamPosition;
  /** The stream's current position; deliveries go on from here. */
  readonly position: StreamPosition;
}

/** The async iterator was read too slowly: `missed` deliveries were dropped. */
export interface Lagged {
  readonly type: "lagged";
  readonly missed: number;
}

/** What a subscription's async iterator yields. */
export type SubscriptionEvent<T = unknown> = Message<T> | RecoveryFailed | Lagged;

/** Callbacks given to `subscribe`. */
export interface SubscriptionHandlers<T = unknown> {
  /** Each delivered message, in offset order, without duplicates. */
  onMessage?: (message: Message<T>) => void;
  /** A reconnect lost messages of this channel. */
  onRecoveryFailed?: (event: RecoveryFailed) => void;
  /** The subscription ended: `error` is undefined after `unsubscribe()` or `close()`. */
  onEnded?: (error: WirehubError | undefined) => void;
}

/** What a subscription needs from its client. */
export interface SubscriptionControl {
  unsubscribe(): Promise<void>;
  position(): StreamPosition | undefined;
}

/**
 * A channel subscription: the handlers given to `subscribe` are called for each delivery, and
 * the subscription is also an async iterable of {@link SubscriptionEvent}s (one reader).
 * Created by `WirehubClient.subscribe`.
 */
export class Subscription<T = unknown> implements AsyncIterable<SubscriptionEvent<T>> {
  readonly channel: string;
  readonly #control: SubscriptionControl;
  readonly #handlers: SubscriptionHandlers<T>;
  readonly #capacity: number;
  /** Whether deliveries are queued for the async iterator. */
  #queueing: boolean;
  readonly #queue: SubscriptionEvent<T>[] = [];
  #missed = 0;
  #wake: (() => void) | undefined;
  #ended = false;
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
    // Without a message callback the iterator is the only consumer: queue from the start.
    this.#queueing = handlers.onMessage === undefined;
  }

  /** The last position seen on this channel (from `subscribed` and every message). */
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

  /** Ends the subscription (resolves once the server confirmed, or at once when offline). */
  unsubscribe(): Promise<void> {
    return this.#control.unsubscribe();
  }

  /**
   * Iterates over deliveries and recovery failures. The loop ends when the subscription ends
   * (it throws the error when one ended it); leaving the loop early unsubscribes.
   */
  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent<T>> {
    this.#queueing = true;
    return {
      next: () => this.#next(),
      return: async () => {
        if (!this.#ended) {
          // Does not wait for the server's confirmation; a failure there changes nothing here.
          this.unsubscribe().catch(() => {});
        }
        return { done: true, value: undefined };
      },
    };
  }

  /** @internal A delivery or a recovery failure. */
  deliver(event: Message<T> | RecoveryFailed): void {
    if (this.#ended) {
      return;
    }
    try {
      if (event.type === "message") {
        this.#handlers.onMessage?.(event);
      } else {
        this.#handlers.onRecoveryFailed?.(event);
      }
    } catch (error) {
      reportListenerError(error);
    }
    if (!this.#queueing) {
      return;
    }
    if (this.#missed > 0) {
      if (this.#queue.length >= this.#capacity) {
        this.#missed += 1;
        return;
      }
      this.#queue.push({ type: "lagged", missed: this.#missed });
      this.#missed = 0;
    }
    if (this.#queue.length >= this.#capacity) {
      this.#missed += 1;
    } else {
      this.#queue.push(event);
    }
    this.#wakeReader();
  }

  /** @internal The subscription ended (`error` undefined: asked for). */
  end(error?: WirehubError): void {
    if (this.#ended) {
      return;
    }
    this.#ended = true;
    this.#error = error;
    try {
      this.#handlers.onEnded?.(error);
    } catch (thrown) {
      reportListenerError(thrown);
    }
    this.#wakeReader();
  }

  /** @internal Ended before it was handed out (its `subscribe` call failed): no callbacks. */
  discard(): void {
    this.#ended = true;
    this.#wakeReader();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #next(): Promise<IteratorResult<SubscriptionEvent<T>, undefined>> {
    for (;;) {
      const event = this.#queue.shift();
      if (event !== undefined) {
        return { done: false, value: event };
      }
      if (this.#missed > 0) {
        const missed = this.#missed;
        this.#missed = 0;
        return { done: false, value: { type: "lagged", missed } };
      }
      if (this.#ended) {
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
