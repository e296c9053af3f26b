/**
 * Connecting: the URL, the token in the upgrade request, opening the socket, and what an
 * ending socket means for the next step (stop for good, reconnect, or back off first).
 *
 * Nothing here holds state: the client asks, and decides what to do with the answer.
 */

import { type ReconnectAdvice, adviceForCloseCode } from "./backoff.js";
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

/** What to do after a socket that never opened: stop for good, or retry after backing off. */
export type Refusal = { readonly stop: WirehubError } | { readonly retry: string };

/**
 * Classifies an upgrade that failed. Node's `ws` names the HTTP status in its error; a browser
 * shows only 1006, so there a refusal cannot be told from a network failure and is retried.
 *
 * @param lastError what the socket's `error` event said, if anything.
 * @param code the close code of the socket that never opened.
 */
export function classifyRefusal(lastError: string | undefined, code: number): Refusal {
  const status = upgradeStatus(lastError);
  if (status === 401 || status === 403) {
    return {
      stop: new WirehubError(
        "unauthorized",
        `the server refused the connection with HTTP ${status} (authentication failed or forbidden)`,
        { status },
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
