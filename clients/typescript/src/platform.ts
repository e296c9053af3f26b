/**
 * What the client needs from its environment: a WebSocket implementation and timers. Both can
 * be injected (Node 20 has no global `WebSocket`; tests use a fake clock).
 */

/** The part of the WebSocket API the client uses: the browser's `WebSocket` and `ws` both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  // Event parameters are loosely typed so that both the DOM's and `ws`'s event types fit.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class such as the browser's global `WebSocket` or `ws`'s default export. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** `WebSocket.OPEN`. */
export const OPEN = 1;

/** Timers and time, injectable for tests (all in milliseconds). */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The real clock: `Date.now` and the global timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Where the client hears that the network went away or came back: `window` in browsers. */
export interface NetworkEvents {
  addEventListener(type: "online" | "offline", listener: () => void): void;
  removeEventListener(type: "online" | "offline", listener: () => void): void;
}

/** `globalThis` when it fires `online`/`offline` (browsers), else `undefined` (Node). */
export function globalNetworkEvents(): NetworkEvents | undefined {
  const candidate = globalThis as { addEventListener?: unknown; removeEventListener?: unknown };
  return typeof candidate.addEventListener === "function" &&
    typeof candidate.removeEventListener === "function"
    ? (globalThis as unknown as NetworkEvents)
    : undefined;
}

/** The global `WebSocket` (browsers, Deno, Node 22+), if there is one. */
export function globalWebSocket(): WebSocketConstructor | undefined {
  const candidate = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof candidate === "function" ? (candidate as WebSocketConstructor) : undefined;
}

/**
 * Reports an exception thrown by application code (a listener or a message handler) without
 * letting it break the client: like an uncaught exception, but outside the client's own call
 * stack.
 */
export function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
  if (typeof report === "function") {
    report(error);
    return;
  }
  globalThis.setTimeout(() => {
    throw error;
  }, 0);
}
