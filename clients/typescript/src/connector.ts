/**
 * Connecting: the URL, the token in the upgrade request, opening the socket, and what an
 * ending socket means for the next step (stop for good, reconnect, or back off first).
 *
 * Nothing here holds state: the client asks, and decides what to do with the answer.
 */

import { type ReconnectAdvice, adviceForCloseCode, parseRetryAfter } from "./backoff.js";
import { WirehubError } from "./errors.js";
import { OPEN, type WebSocketConstructor, type WebSocketLike } from "./platform.js";

/**
 * Checks that `url` is a `ws://` or `wss://` URL.
 * @throws {WirehubError} `invalid_url` otherwise.
 */
export function checkUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new WirehubError("invalid_url", `invalid URL ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new WirehubError(
      "invalid_url",
      `invalid URL ${JSON.stringify(url)}: the scheme must be ws:// or wss://`,
    );
  }
}

/** The upgrade request's URL: `url` with the token as its `?token=` query parameter. */
export function upgradeUrl(url: string, token: string | undefined): string {
  const upgrade = new URL(url);
  if (token !== undefined) {
    upgrade.searchParams.set("token", token);
  }
  return upgrade.toString();
}

/** Opens a socket, or says why the WebSocket class refused to (`connect_failed`). */
export function openSocket(
  WebSocket: WebSocketConstructor,
  url: string,
): { ws: WebSocketLike } | { error: WirehubError } {
  try {
    return { ws: new WebSocket(url) };
  } catch (error) {
    return {
      error: new WirehubError(
        "connect_failed",
        `could not connect: ${error instanceof Error ? error.message : String(error)}`,
      ),
    };
  }
}

/** Calls `listener` on each WebSocket ping from the server where they can be seen (Node's `ws`). */
export function onServerPing(ws: WebSocketLike, listener: () => void): void {
  const emitter = ws as unknown as { on?: (event: string, listener: () => void) => void };
  if (typeof emitter.on === "function") {
    emitter.on("ping", listener);
  }
}

/** What a socket's `error` event says (Node's `ws` names the HTTP status there). */
export function describeSocketError(event: unknown): string | undefined {
  if (typeof event !== "object" || event === null) return undefined;
  const { message, error } = event as { message?: unknown; error?: unknown };
  if (typeof message === "string" && message !== "") return message;
  if (error instanceof Error) return error.message;
  return undefined;
}

/** The HTTP answer to a refused upgrade, where it can be read (Node's `ws`). */
export interface UpgradeResponse {
  readonly status: number;
  /** `Retry-After` in milliseconds, when the server sent one in seconds. */
  readonly retryAfter: number | undefined;
}

/**
 * Calls `listener` with the status and `Retry-After` of an upgrade the server answered with
 * anything but 101, where that can be seen (Node's `ws` emits `unexpected-response`), then
 * gives the socket up: `ws` leaves that to whoever listens, and follows with its `error` and
 * `close` events. Browsers show a refused upgrade only as a close with 1006.
 */
export function onUpgradeResponse(ws: WebSocketLike, listener: (response: UpgradeResponse) => void): void {
  const emitter = ws as unknown as {
    on?: (event: string, listener: (request: unknown, response: unknown) => void) => void;
  };
  if (typeof emitter.on !== "function") return;
  emitter.on("unexpected-response", (_request, response) => {
    const { statusCode, headers } = (response ?? {}) as {
      statusCode?: unknown;
      headers?: Record<string, unknown>;
    };
    const header = headers?.["retry-after"];
    listener({
      status: typeof statusCode === "number" ? statusCode : 0,
      retryAfter: typeof header === "string" ? parseRetryAfter(header) : undefined,
    });
    terminate(ws);
  });
}

/**
 * What to do after a socket that never opened: stop for good, or retry (`overloaded`: the
 * server refused with 503 or 429 and the error says when to come back, if it said so).
 */
export type Refusal =
  | { readonly stop: WirehubError }
  | { readonly retry: string; readonly overloaded?: WirehubError };

/**
 * Classifies an upgrade that failed. Node's `ws` shows the HTTP answer (`response`, or the
 * status named in its error); a browser shows only 1006, so there a refusal cannot be told
 * from a network failure and is retried.
 *
 * @param lastError what the socket's `error` event said, if anything.
 * @param code the close code of the socket that never opened.
 * @param response the HTTP answer to the upgrade, when it could be read.
 */
export function classifyRefusal(
  lastError: string | undefined,
  code: number,
  response?: UpgradeResponse,
): Refusal {
  const status = response?.status ?? upgradeStatus(lastError);
  if (status === 401 || status === 403) {
    return {
      stop: new WirehubError(
        "unauthorized",
        `the server refused the connection with HTTP ${status} (authentication failed or forbidden)`,
        { status },
      ),
    };
  }
  if (status === 503 || status === 429) {
    const retryAfter = response?.retryAfter;
    const detail = `the server answered the upgrade with HTTP ${status}`;
    return {
      retry: detail,
      overloaded: new WirehubError(
        "overloaded",
        `the server is overloaded (HTTP ${status})${retryAfter === undefined ? "" : `; retry after ${retryAfter} ms`}`,
        { status, ...(retryAfter === undefined ? {} : { retryAfter }) },
      ),
    };
  }
  return {
    retry:
      status !== undefined
        ? `the server answered the upgrade with HTTP ${status}`
        : (lastError ?? `closed with ${code} before it opened`),
  };
}

/** What to do after an open connection closed: stop for good, or reconnect as advised. */
export type Closing = { readonly stop: WirehubError } | { readonly advice: ReconnectAdvice };

/** Classifies the close code of an open connection (4000–4099: do not reconnect). */
export function classifyClose(code: number, reason: string): Closing {
  const advice = adviceForCloseCode(code);
  if (advice === "stop") {
    return {
      stop: new WirehubError(
        "rejected",
        `the server closed the connection with code ${code} (${reason}) and asked not to reconnect`,
        { closeCode: code, reason },
      ),
    };
  }
  return { advice };
}

/** Drops a socket without waiting for a close handshake. */
export function terminate(ws: WebSocketLike): void {
  try {
    const node = ws as unknown as { terminate?: () => void };
    if (typeof node.terminate === "function") {
      node.terminate();
    } else if (ws.readyState <= OPEN) {
      ws.close(1000, "client gave up the connection");
    }
  } catch {
    // Already closed.
  }
}

/** Reads "Unexpected server response: 401" (Node's `ws`) from a socket error. */
function upgradeStatus(description: string | undefined): number | undefined {
  const match = description?.match(/Unexpected server response: (\d{3})/);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}
