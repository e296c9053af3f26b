// @wirehub/pusher-recovery: the events a pusher-js client missed while it reconnected, from a
// wirehub server's history, each once and in order; or a callback saying they could not be.
//
// How (see README.md): a wirehub server gives every event frame made from a publication its
// place in the channel's stream as a top-level field, `"wirehub":{"epoch":E,"offset":N}`, and
// `pusher_internal:subscription_succeeded` the position the subscription starts after.
// pusher-js drops fields it does not know when it decodes a frame, so the connector reads them
// from the raw frame: it shadows `emit` of the transport of each connection pusher-js makes
// (`pusher.connection.connection.transport`, the TransportConnection whose 'message' events
// pusher-js's Connection decodes), sees each frame before pusher-js does, and then hands it on
// (or not) with the original `emit`. Per channel it keeps the last position handed to the app.
// After a resubscription it sends `wirehub:recover` with that position and the socket ids of
// the client's earlier connections, holds the channel's frames until `wirehub:recovered` or
// `wirehub:recovery_failed`, then hands on the replayed and held frames in offset order, each
// offset once. Pinned to pusher-js 8 (the peer dependency): the hook uses its internals.

/** Earlier socket ids kept: what they were not to get, a recovery does not replay either. */
const EARLIER_SOCKETS = 8;

/** How long a recovery may wait for the server's answer before it is reported as failed. */
const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Frames a channel may hold while its recovery is under way (the replay's part, at most half
 * the server's queue, 2 048 by default, and the live events meanwhile); one more and the
 * recovery is reported as failed (`overflow`) and the held frames handed on.
 */
const DEFAULT_MAX_HELD = 10_000;

const HOOKED = Symbol("wirehub.pusher-recovery");

/**
 * Recovers missed events for the channels of `pusher` (a pusher-js 8 `Pusher` instance; with
 * Laravel Echo, the one passed as `client` or `echo.connector.pusher`).
 *
 * @param {any} pusher
 * @param {import("./index.js").RecoveryOptions} [options]
 * @returns {import("./index.js").Recovery}
 */
export function recover(pusher, options = {}) {
  if (pusher === null || typeof pusher !== "object" || pusher.connection === undefined) {
    throw new TypeError("recover(pusher): a pusher-js Pusher instance is needed");
  }
  const accept = options.channels ?? (() => true);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxHeld = options.maxHeld ?? DEFAULT_MAX_HELD;
  const now = options.now ?? (() => Date.now());
  /** @type {Map<string, ChannelState>} */
  const channels = new Map();
  /** Socket ids of earlier connections, newest first. */
  const earlier = [];
  let socketId;
  /** The hooked transport of the current connection, with the `emit` it had. */
  let current;
  const stats = { recovered: 0, failed: 0, replayed: 0, duplicates: 0 };

  const report = (callback, info) => {
    if (typeof callback !== "function") return;
    try {
      callback(info);
    } catch (error) {
      // The app's callback must not break the delivery of the frames that follow.
      setTimeout(() => {
        throw error;
      });
    }
  };

  /** Hands a frame to pusher-js. */
  const pass = (hook, messageEvent) => hook.emit.call(hook.transport, "message", messageEvent);

  /** Hands a positioned frame to pusher-js unless its offset was handed on already. */
  const deliver = (hook, state, position, messageEvent) => {
    if (position.epoch === state.epoch && position.offset <= state.offset) {
      stats.duplicates += 1;
      return false;
    }
    state.epoch = position.epoch;
    state.offset = position.offset;
    pass(hook, messageEvent);
    return true;
  };

  /** Hands on the held frames of `state` (those up to `upTo`, all when undefined) in order. */
  const flush = (hook, state, upTo) => {
    const ready = [];
    const kept = [];
    for (const held of state.held) {
      if (upTo === undefined || (held.position.epoch === state.epoch && held.position.offset <= upTo)) {
        ready.push(held);
      } else {
        kept.push(held);
      }
    }
    state.held = kept;
    ready.sort((a, b) => a.position.offset - b.position.offset);
    let delivered = 0;
    for (const held of ready) {
      if (held.position === undefined) pass(hook, held.messageEvent);
      else if (deliver(hook, state, held.position, held.messageEvent)) delivered += 1;
    }
    return delivered;
  };

  const ask = (hook, name, state) => {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => fail(hook, name, state, "timeout"), timeoutMs);
    const sent = pusher.connection.send_event("wirehub:recover", {
      channel: name,
      epoch: state.epoch,
      offset: state.offset,
      socket_ids: earlier.slice(),
    });
    if (sent === false) fail(hook, name, state, "not_sent");
  };

  const startRecovery = (hook, name, state) => {
    state.recovering = { since: { epoch: state.epoch, offset: state.offset }, startedAt: now(), rounds: 1, delivered: 0 };
    state.held = [];
    ask(hook, name, state);
  };

  const fail = (hook, name, state, reason) => {
    if (state.recovering === undefined || hook !== current) return;
    clearTimeout(state.timer);
    const { since } = state.recovering;
    state.recovering = undefined;
    stats.failed += 1;
    // From here on the channel's stream is what the new subscription delivers.
    if (state.start !== undefined) {
      const sameEpoch = state.epoch === state.start.epoch;
      state.offset = sameEpoch ? Math.max(state.offset, state.start.offset) : state.start.offset;
      state.epoch = state.start.epoch;
    }
    report(options.onRecoveryFailed, { channel: name, reason, since });
    flush(hook, state);
  };

  const onRecovered = (hook, name, state, data) => {
    if (state.recovering === undefined) return;
    const recovering = state.recovering;
    if (data.complete !== true || recovering.gapped) {
      // The replay did not fit the connection's queue (or live events were dropped while it
      // was under way, so that those held may have holes): what the replay covered is handed
      // on, and the rest asked for from where it stopped.
      const before = state.offset;
      recovering.delivered += flush(hook, state, data.offset);
      if (data.epoch === state.epoch && data.offset > state.offset) state.offset = data.offset;
      if (state.offset <= before && !recovering.gapped) return fail(hook, name, state, "no_progress");
      recovering.gapped = false;
      recovering.rounds += 1;
      ask(hook, name, state);
      return;
    }
    clearTimeout(state.timer);
    state.recovering = undefined;
    recovering.delivered += flush(hook, state);
    stats.recovered += 1;
    stats.replayed += recovering.delivered;
    report(options.onRecovered, {
      channel: name,
      since: recovering.since,
      events: recovering.delivered,
      rounds: recovering.rounds,
      ms: now() - recovering.startedAt,
    });
  };

  /**
   * Whether pusher-js has `name` subscribed: a channel the connector does not know yet is
   * only tracked then. Frames of a channel the app unsubscribed from can still arrive (sent
   * before the server saw the unsubscribe, or the success of a subscription the app cancelled
   * while it was pending, which pusher-js then unsubscribes); tracked, they would make the
   * next subscription recover what the channel got while the app was not subscribed.
   */
  const subscribedNow = (name) => typeof pusher.channel !== "function" || pusher.channel(name)?.subscribed === true;

  const onSubscribed = (hook, name, message, messageEvent) => {
    const position = positionOf(message);
    pass(hook, messageEvent);
    if (position === undefined) return;
    const state = channels.get(name);
    if (state === undefined || state.epoch === undefined) {
      if (!subscribedNow(name)) return;
      channels.set(name, { epoch: position.epoch, offset: position.offset, start: position, held: [] });
      return;
    }
    state.start = position;
    // Nothing published since the last event handed on: nothing to recover.
    if (state.epoch === position.epoch && state.offset >= position.offset) return;
    startRecovery(hook, name, state);
  };

  const onFrame = (hook, messageEvent) => {
    if (hook !== current) return pass(hook, messageEvent);
    let message;
    try {
      message = JSON.parse(messageEvent.data);
    } catch {
      return pass(hook, messageEvent);
    }
    const name = message?.channel;
    if (typeof name !== "string" || !accept(name)) return pass(hook, messageEvent);
    switch (message.event) {
      case "pusher_internal:subscription_succeeded":
        return onSubscribed(hook, name, message, messageEvent);
      case "wirehub:recovered":
      case "wirehub:recovery_failed": {
        const state = channels.get(name);
        if (state === undefined) return;
        const data = dataOf(message);
        if (message.event === "wirehub:recovered") return onRecovered(hook, name, state, data);
        return fail(hook, name, state, typeof data.reason === "string" ? data.reason : "unknown");
      }
      case "wirehub:gap": {
        // Events of this channel were dropped by the server (a `gap` channel whose queue
        // overflowed, a broker that lost messages): recover them like a reconnect does.
        pass(hook, messageEvent);
        const state = channels.get(name);
        if (state === undefined || state.epoch === undefined) return;
        if (state.recovering === undefined) startRecovery(hook, name, state);
        else state.recovering.gapped = true;
        return;
      }
      default:
        break;
    }
    const state = channels.get(name);
    const position = positionOf(message);
    if (state === undefined) {
      if (position !== undefined && subscribedNow(name)) channels.set(name, { epoch: position.epoch, offset: position.offset, held: [] });
      return pass(hook, messageEvent);
    }
    if (state.recovering !== undefined) {
      // Member events and other unpositioned frames are not held: they are not replayed.
      if (position === undefined) return pass(hook, messageEvent);
      state.held.push({ position, messageEvent });
      // Memory stays bounded when the answer is slow to come and the channel busy.
      if (state.held.length > maxHeld) fail(hook, name, state, "overflow");
      return;
    }
    if (position === undefined) return pass(hook, messageEvent);
    deliver(hook, state, position, messageEvent);
  };

  /**
   * Ends the recoveries under way when their connection does: their held frames came on it,
   * and the positions handed on are where the next connection's recoveries start. Not at the
   * next `connected` only: a timeout while pusher-js reconnects (or after `disconnect()`)
   * would report a failure that the next connection can recover, and hand the held frames to
   * a connection pusher-js no longer listens to, past the position the next one asks from.
   */
  const endRecoveries = () => {
    for (const state of channels.values()) {
      clearTimeout(state.timer);
      state.recovering = undefined;
      state.held = [];
    }
  };

  const onStateChange = (change) => {
    if (change?.current !== "connected") endRecoveries();
  };

  const onConnected = () => {
    const transport = pusher.connection.connection?.transport;
    if (transport === undefined || transport === null || transport[HOOKED]) return;
    const newSocketId = pusher.connection.socket_id;
    if (socketId !== undefined && socketId !== newSocketId) {
      earlier.unshift(socketId);
      earlier.length = Math.min(earlier.length, EARLIER_SOCKETS);
    }
    socketId = newSocketId;
    endRecoveries();
    const emit = transport.emit;
    const hook = { transport, emit };
    transport[HOOKED] = true;
    transport.emit = function (event, data) {
      if (event === "message" && data !== null && typeof data === "object" && typeof data.data === "string") {
        return onFrame(hook, data);
      }
      return emit.call(this, event, data);
    };
    current = hook;
  };

  pusher.connection.bind("state_change", onStateChange);
  pusher.connection.bind("connected", onConnected);
  if (pusher.connection.state === "connected") onConnected();

  // An app that unsubscribes does not want what the channel gets meanwhile.
  const ownUnsubscribe = Object.prototype.hasOwnProperty.call(pusher, "unsubscribe");
  const unsubscribe = pusher.unsubscribe;
  pusher.unsubscribe = function (name) {
    const state = channels.get(name);
    if (state !== undefined) clearTimeout(state.timer);
    channels.delete(name);
    return unsubscribe.call(this, name);
  };

  return {
    position(name) {
      const state = channels.get(name);
      if (state === undefined || state.epoch === undefined) return undefined;
      return { epoch: state.epoch, offset: state.offset };
    },
    recovering(name) {
      return channels.get(name)?.recovering !== undefined;
    },
    get socketIds() {
      return earlier.slice();
    },
    get stats() {
      return { ...stats };
    },
    stop() {
      pusher.connection.unbind("state_change", onStateChange);
      pusher.connection.unbind("connected", onConnected);
      if (ownUnsubscribe) pusher.unsubscribe = unsubscribe;
      else delete pusher.unsubscribe;
      for (const state of channels.values()) clearTimeout(state.timer);
      if (current !== undefined) {
        const { transport, emit } = current;
        // Frames still held are handed on: the app gets them, as without the connector.
        for (const state of channels.values()) flush(current, state);
        transport.emit = emit;
        delete transport[HOOKED];
        current = undefined;
      }
      channels.clear();
    },
  };
}

/**
 * @typedef {{ epoch: string, offset: number }} Position
 * @typedef {{
 *   epoch?: string, offset: number, start?: Position,
 *   recovering?: { since: Position, startedAt: number, rounds: number, delivered: number, gapped?: boolean },
 *   held: { position?: Position, messageEvent: any }[], timer?: any
 * }} ChannelState
 */

/** The `wirehub` position field of a raw frame, when it is valid. */
function positionOf(message) {
  const position = message?.wirehub;
  if (position === null || typeof position !== "object") return undefined;
  const { epoch, offset } = position;
  if (typeof epoch !== "string" || !Number.isSafeInteger(offset) || offset < 0) return undefined;
  return { epoch, offset };
}

/** A frame's data: Pusher sends objects as JSON strings. */
function dataOf(message) {
  let data = message.data;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch {
      return {};
    }
  }
  return data !== null && typeof data === "object" ? data : {};
}
