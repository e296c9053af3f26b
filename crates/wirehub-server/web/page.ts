// The page at `/`: one channel (`/?channel=NAME`, default `demo`) through the TypeScript SDK.
// Subscribed on load; shows the connection state with the backoff delay and attempt, each
// message's data and offset, the outcome of every recovery after a reconnect, and a publish
// box: two tabs on one channel make a chat. `?token=JWT` for servers that need tokens.
import {
  type Message,
  type RecoveryFailed,
  type StreamPosition,
  WirehubClient,
  WirehubError,
} from "@wirehub/client";

const MAX_LOG_ITEMS = 500;

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page lacks #${id}`);
  return found as T;
}

const params = new URLSearchParams(location.search);
const channel = params.get("channel")?.trim() || "demo";
const token = params.get("token") ?? undefined;
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;

const stateEl = element("state");
const countdownEl = element("countdown");
const recoveryEl = element("recovery");
const problemEl = element("problem");
const logEl = element<HTMLOListElement>("log");
const publishForm = element<HTMLFormElement>("publish");
const nameInput = element<HTMLInputElement>("name");
const textInput = element<HTMLInputElement>("text");
const publishStatus = element("publish-status");

document.title = `${channel} · wirehub`;
element("channel-name").textContent = channel;
element<HTMLInputElement>("channel").value = channel;
element("url").textContent = wsUrl;
element("curl").textContent =
  `curl -X POST ${location.origin}/api/publish -d '${JSON.stringify({ channel, data: { text: "hello" } })}'`;

const NAME_KEY = "wirehub.name";
nameInput.value = localStorage.getItem(NAME_KEY) ?? `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
nameInput.addEventListener("change", () => localStorage.setItem(NAME_KEY, nameInput.value.trim()));

// --- connection state --------------------------------------------------------------------

let countdownTimer: ReturnType<typeof setInterval> | undefined;

function showState(state: string, text: string, detail: { attempt?: number; delay?: number } = {}): void {
  stateEl.dataset.state = state;
  stateEl.textContent = text;
  if (detail.attempt === undefined) delete stateEl.dataset.attempt;
  else stateEl.dataset.attempt = String(detail.attempt);
  if (detail.delay === undefined) delete stateEl.dataset.delay;
  else stateEl.dataset.delay = String(Math.round(detail.delay));
  if (countdownTimer !== undefined) clearInterval(countdownTimer);
  countdownTimer = undefined;
  countdownEl.textContent = "";
  if (detail.delay !== undefined) {
    const due = Date.now() + detail.delay;
    const tick = (): void => {
      const left = Math.max(0, due - Date.now());
      countdownEl.textContent = `next try in ${(left / 1000).toFixed(1)} s`;
      if (left === 0 && countdownTimer !== undefined) clearInterval(countdownTimer);
    };
    tick();
    countdownTimer = setInterval(tick, 100);
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

const client = new WirehubClient(wsUrl, { token });

let lastClose = "";
client.on("connecting", ({ attempt }) =>
  showState("connecting", attempt === 0 ? "connecting…" : `connecting (attempt ${attempt})…`, { attempt }),
);
client.on("connected", ({ session }) => {
  showState("connected", "connected");
  element("session").textContent = `(session ${session})`;
});
client.on("disconnected", ({ code, reason }) => {
  lastClose = code === undefined ? reason : `close ${code}${reason ? `: ${reason}` : ""}`;
});
client.on("reconnecting", ({ attempt, delay }) =>
  showState(
    "reconnecting",
    `reconnecting: attempt ${attempt} in ${seconds(delay)}${lastClose ? ` (${lastClose})` : ""}`,
    { attempt, delay },
  ),
);
client.on("stopped", ({ error }) => {
  showState("closed", error === undefined ? "closed" : `stopped: ${error.message}`);
});
client.on("error", (error) => {
  // Refusals that stop the client are reported by `stopped`; the rest are passing.
  if (error.code === "unauthorized" || error.code === "forbidden") problemEl.textContent = error.message;
});

// --- the log -----------------------------------------------------------------------------

function append(item: HTMLLIElement): void {
  const atBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
  logEl.append(item);
  while (logEl.childElementCount > MAX_LOG_ITEMS) logEl.firstElementChild?.remove();
  if (atBottom) logEl.scrollTop = logEl.scrollHeight;
}

function note(text: string, kind: "note" | "gap"): void {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = text;
  append(item);
}

/** `{text, from?}` as a chat line; anything else as its JSON. */
function showMessage(message: Message): void {
  const item = document.createElement("li");
  item.className = "message";
  item.dataset.offset = String(message.offset);
  const json = JSON.stringify(message.data);
  item.dataset.json = json;
  const offset = document.createElement("span");
  offset.className = "offset";
  offset.textContent = `#${message.offset}`;
  item.append(offset);
  const data = message.data as { text?: unknown; from?: unknown } | null;
  const chat =
    typeof data === "object" &&
    data !== null &&
    !Array.isArray(data) &&
    typeof data.text === "string" &&
    Object.keys(data).every((key) => key === "text" || (key === "from" && typeof data.from === "string"));
  if (chat) {
    if (typeof data.from === "string") {
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = `${data.from}:`;
      item.append(from);
    }
    item.append(document.createTextNode(String(data.text)));
  } else {
    const code = document.createElement("code");
    code.textContent = json;
    item.append(code);
  }
  append(item);
}

function describe(position: StreamPosition): string {
  return `offset ${position.offset} of epoch ${position.epoch}`;
}

client.on("recovered", ({ since, position }) => {
  const missed = position.offset - since.offset;
  recoveryEl.dataset.outcome = "recovered";
  recoveryEl.textContent =
    missed === 0
      ? `recovered: nothing was missed (from ${describe(since)})`
      : `recovered: ${missed} missed message${missed === 1 ? "" : "s"} replayed (offsets ${since.offset + 1}–${position.offset})`;
  note(`reconnected: ${recoveryEl.textContent}`, "note");
});

function showLoss(event: RecoveryFailed): void {
  recoveryEl.dataset.outcome = "gap";
  recoveryEl.textContent =
    `gap: messages after ${describe(event.since)} could not be recovered ` +
    `(no longer in the server's history); going on after ${describe(event.position)}`;
  note(recoveryEl.textContent, "gap");
}

// --- publishing --------------------------------------------------------------------------

/** Text that parses as a JSON object or array is sent as it is; anything else as a chat line. */
function dataOf(text: string, from: string): unknown {
  if (/^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON: a chat line
    }
  }
  return from === "" ? { text } : { from, text };
}

publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value;
  if (text.trim() === "") return;
  const from = nameInput.value.trim();
  publishStatus.textContent = client.state === "connected" ? "sending…" : "held until the connection is back…";
  client.publish(channel, dataOf(text, from)).then(
    (offset) => {
      publishStatus.textContent = `sent: offset ${offset}`;
    },
    (error: unknown) => {
      publishStatus.textContent = `not sent: ${error instanceof Error ? error.message : String(error)}`;
    },
  );
  textInput.value = "";
  textInput.focus();
});

// --- start -------------------------------------------------------------------------------

client.connect().catch(() => {
  // reported by the `stopped` event
});
client
  .subscribe(channel, {
    onMessage: showMessage,
    onRecoveryFailed: showLoss,
    onEnded: (error) => {
      if (error !== undefined) problemEl.textContent = `the subscription ended: ${error.message}`;
    },
  })
  .then(
    () => note(`subscribed to ${channel}`, "note"),
    (error: unknown) => {
      problemEl.textContent =
        error instanceof WirehubError || error instanceof Error
          ? `cannot subscribe to ${channel}: ${error.message}`
          : `cannot subscribe to ${channel}`;
    },
  );

// For the console and for tests: the client this page uses.
(window as unknown as { wirehub: WirehubClient }).wirehub = client;
