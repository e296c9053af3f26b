// The page at `/`: one channel (`/?channel=NAME`, default `demo`) through the TypeScript SDK.
// Subscribed on load; shows the connection state with the backoff delay and attempt, each
// message's data and offset, the outcome of every recovery after a reconnect, and a publish
// box: two tabs on one channel make a chat. On a presence channel it also lists who is here.
// `?token=JWT` for servers that need tokens.
import {
  type Member,
  type Message,
  type Presence,
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

// --- presence ----------------------------------------------------------------------------
//
// On a presence channel (`[[channels]] presence = true` on the server), who is here: the
// members are read once subscribed and again after every reconnect (a read replaces what is
// shown), and kept up to date in between by `join` and `leave`, keyed by `member.client`. The
// server answers in order on the connection, so a change made before a read is in it and a
// change after it arrives as an event after the answer. The count is the server's exact one;
// when the server lists fewer members than it counts, the page says so. On a channel without
// presence the read is refused (`presence_disabled`) and the section stays hidden.

const presenceEl = element("presence");
const presenceCountEl = element("presence-count");
const membersEl = element<HTMLUListElement>("members");
const presenceNoteEl = element("presence-note");
const presenceNewsEl = element("presence-news");

/** The members shown, by `client`. */
const members = new Map<string, Member>();
/** The server's count: exact, also when `members` lists fewer. */
let memberCount = 0;
/** Whether the channel has presence: unknown until the first answer. */
let presenceEnabled: boolean | undefined;
/** Whether what is shown is as of an earlier connection (read again once reconnected). */
let presenceStale = false;
/** Set once the first `subscribe` is confirmed: from then on, every reconnect reads again. */
let subscribedOnce = false;
/** Ignores the answer of a read overtaken by a newer one. */
let presenceRead = 0;
/**
 * The session ids this page has had. A member keeps its first connection's `client` when the
 * same user reconnects within the server's grace, so the page's own entry may carry an
 * earlier one.
 */
const ownSessions = new Set<string>();
/** This page's member, from its own `join`: listed even when the server's list is truncated. */
let ownMember: Member | undefined;

function isOwn(member: Member): boolean {
  return ownSessions.has(member.client);
}

/** A short, stable tag for a connection: enough to tell anonymous members apart. */
function shortClient(client: string): string {
  return client.slice(0, 6);
}

/** The token's `info.name` when it has one, else its user; null for an anonymous member. */
function memberName(member: Member): string | null {
  const info = member.info as { name?: unknown } | null | undefined;
  if (typeof info === "object" && info !== null && typeof info.name === "string" && info.name !== "") return info.name;
  return member.user;
}

function memberLabel(member: Member): string {
  return memberName(member) ?? `anonymous ${shortClient(member.client)}`;
}

function renderPresence(): void {
  if (presenceEnabled !== true) return;
  const sorted = [...members.values()].sort((a, b) => {
    if (isOwn(a) !== isOwn(b)) return isOwn(a) ? -1 : 1;
    const byName = memberLabel(a).localeCompare(memberLabel(b));
    return byName !== 0 ? byName : a.client.localeCompare(b.client);
  });
  const items = sorted.map((member) => {
    const item = document.createElement("li");
    item.dataset.client = member.client;
    const name = memberName(member);
    if (name === null) {
      item.classList.add("anonymous");
      const label = document.createElement("span");
      label.textContent = "anonymous";
      const tag = document.createElement("code");
      tag.textContent = shortClient(member.client);
      item.append(label, " ", tag);
    } else {
      item.textContent = name;
      if (member.user !== null && member.user !== name) item.title = `user ${member.user}`;
    }
    if (isOwn(member)) {
      item.classList.add("own");
      item.dataset.own = "true";
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = " (you)";
      item.append(you);
    }
    return item;
  });
  membersEl.replaceChildren(...items);
  const count = Math.max(memberCount, members.size);
  presenceCountEl.textContent = String(count);
  presenceEl.dataset.count = String(count);
  const notes: string[] = [];
  if (members.size < count) notes.push(`listing ${members.size} of ${count}: the server lists at most a limited number`);
  if (presenceStale) notes.push("as of the last connection; read again once reconnected");
  presenceNoteEl.textContent = notes.join("; ");
  presenceEl.dataset.truncated = String(members.size < count);
  presenceEl.dataset.stale = String(presenceStale);
  presenceEl.hidden = false;
}

function showPresence(presence: Presence): void {
  presenceEnabled = true;
  presenceEl.dataset.presence = "on";
  presenceStale = false;
  members.clear();
  for (const member of presence.members) members.set(member.client, member);
  if (presence.truncated && ownMember !== undefined) members.set(ownMember.client, ownMember);
  memberCount = presence.count;
  renderPresence();
}

function readPresence(): void {
  if (presenceEnabled === false) return;
  const read = ++presenceRead;
  client.presence(channel).then(
    (presence) => {
      if (read === presenceRead) showPresence(presence);
    },
    (error: unknown) => {
      // No presence on this channel: the section stays hidden, for good. Anything else
      // (the connection lost before the answer, a timeout) is read again after the reconnect.
      if (error instanceof WirehubError && error.code === "presence_disabled") {
        presenceEnabled = false;
        presenceEl.dataset.presence = "off";
      }
    },
  );
}

client.on("connected", ({ session }) => {
  ownSessions.add(session);
  ownMember = undefined;
  // After a reconnect: the subscription is restored before this runs, so the read comes after it.
  if (subscribedOnce) readPresence();
});
client.on("disconnected", () => {
  if (presenceEnabled !== true) return;
  presenceStale = true;
  renderPresence();
});
client.on("join", ({ channel: joined, member }) => {
  if (joined !== channel) return;
  if (member.client === client.session) ownMember = member;
  // Before the first answer: the answer includes this member.
  if (presenceEnabled !== true) return;
  if (!members.has(member.client)) {
    memberCount += 1;
    if (!isOwn(member)) presenceNewsEl.textContent = `${memberLabel(member)} joined`;
  }
  members.set(member.client, member);
  renderPresence();
});
client.on("leave", ({ channel: left, member }) => {
  if (left !== channel || presenceEnabled !== true) return;
  // One not listed (beyond a truncated list) still counted.
  if (members.delete(member.client) || memberCount > members.size) memberCount = Math.max(0, memberCount - 1);
  if (ownMember?.client === member.client) ownMember = undefined;
  presenceNewsEl.textContent = `${memberLabel(member)} left`;
  renderPresence();
});

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
    () => {
      subscribedOnce = true;
      note(`subscribed to ${channel}`, "note");
      readPresence();
    },
    (error: unknown) => {
      problemEl.textContent =
        error instanceof WirehubError || error instanceof Error
          ? `cannot subscribe to ${channel}: ${error.message}`
          : `cannot subscribe to ${channel}`;
    },
  );

// For the console and for tests: the client this page uses.
(window as unknown as { wirehub: WirehubClient }).wirehub = client;
