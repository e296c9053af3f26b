// A scripted WebSocket for unit tests: the test plays the server, frame by frame.
import type { WebSocketConstructor, WebSocketLike } from "../../src/index.js";

/** A scripted WebSocket: the test plays the server. */
export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: any) => void) | null = null;
  onmessage: ((event: any) => void) | null = null;
  onclose: ((event: any) => void) | null = null;
  onerror: ((event: any) => void) | null = null;
  /** Every frame the client sent, parsed. */
  readonly sent: Record<string, any>[] = [];
  closedByClient: { code: number | undefined; reason: string | undefined } | undefined;
  terminated = false;
  /** Listeners of `ws`-style events (`on`), which the client uses where they exist (Node's `ws`). */
  readonly #listeners = new Map<string, ((...args: any[]) => void)[]>();

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("the socket is not open");
    this.sent.push(JSON.parse(data) as Record<string, any>);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 2;
  }

  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
  }

  /** `ws`'s `on` (EventEmitter): the client listens for `ping` and `unexpected-response`. */
  on(event: string, listener: (...args: any[]) => void): void {
    this.#listeners.set(event, [...(this.#listeners.get(event) ?? []), listener]);
  }

  // ---- the server's side ----

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  welcome(session = "s1"): void {
    this.receive({ type: "welcome", version: 1, session, heartbeat: 30 });
  }

  /** Opens and sends `welcome`. */
  accept(session = "s1"): void {
    this.open();
    this.welcome(session);
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  receiveBinary(bytes: Uint8Array): void {
    this.onmessage?.({ data: bytes });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: true });
  }

  /** The upgrade fails: with `status` as Node's `ws` reports it, without as a browser does. */
  failUpgrade(status?: number): void {
    if (status !== undefined) {
      this.onerror?.({ message: `Unexpected server response: ${status}` });
    } else {
      this.onerror?.({});
    }
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "", wasClean: false });
  }

  /**
   * The upgrade is answered with `status` and `headers`, as Node's `ws` shows it: with an
   * `unexpected-response` listener, that listener gets the response and must give the socket
   * up (then `error` and `close` follow); without one, `ws` reports the status in its error.
   */
  refuseUpgrade(status: number, headers: Record<string, string> = {}): void {
    const listeners = this.#listeners.get("unexpected-response") ?? [];
    if (listeners.length === 0) {
      this.failUpgrade(status);
      return;
    }
    const lowered = Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
    for (const listener of listeners) listener({}, { statusCode: status, headers: lowered });
    if (!this.terminated) throw new Error("the client did not give up the refused socket");
    this.onerror?.({ message: "WebSocket was closed before the connection was established" });
    this.onclose?.({ code: 1006, reason: "", wasClean: false });
  }

  /** The frames of one type the client sent. */
  sentOf(type: string): Record<string, any>[] {
    return this.sent.filter((frame) => frame.type === type);
  }

  /** Answers every unanswered `subscribe` with `subscribed`. */
  ackSubscribes(epoch = "e1", offset = 0, recovered?: boolean): void {
    for (const frame of this.sentOf("subscribe")) {
      if (frame.answered) continue;
      frame.answered = true;
      this.receive({
        type: "subscribed",
        id: frame.id,
        channel: frame.channel,
        epoch,
        offset,
        ...(recovered === undefined ? {} : { recovered }),
      });
    }
  }
}

/** A WebSocket class whose instances the test can reach. */
export function fakeWebSocket(): { WebSocket: WebSocketConstructor; sockets: FakeSocket[]; last(): FakeSocket } {
  const sockets: FakeSocket[] = [];
  class Socket extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return {
    WebSocket: Socket,
    sockets,
    last() {
      const socket = sockets[sockets.length - 1];
      if (socket === undefined) throw new Error("no socket was created");
      return socket;
    },
  };
}
