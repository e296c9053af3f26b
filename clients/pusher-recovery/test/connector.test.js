// The connector's rules on a stand-in for pusher-js's objects (the parts the connector
// touches: `connection` with its events, state, socket id and `send_event`, the current
// Connection's `transport` whose `emit('message', {data})` pusher-js listens to, and
// `unsubscribe`): order, each offset once, partial replays, failures, timeouts, reconnects
// during a recovery. The real pusher-js, Echo and server are in clients/pusher-compat.
import assert from "node:assert/strict";
import { test } from "node:test";

import { recover } from "../index.js";

class Dispatcher {
  listeners = new Map();
  bind(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
  }
  unbind(event, fn) {
    this.listeners.set(event, (this.listeners.get(event) ?? []).filter((f) => f !== fn));
  }
  emit(event, data) {
    for (const fn of this.listeners.get(event) ?? []) fn(data);
  }
}

/** What pusher-js would be: frames reaching its Connection land in `delivered`. */
function fakePusher() {
  const connection = new Dispatcher();
  const pusher = {
    connection,
    delivered: [],
    sent: [],
    unsubscribed: [],
    unsubscribe(name) {
      this.unsubscribed.push(name);
    },
  };
  connection.state = "initialized";
  connection.send_event = (event, data) => {
    pusher.sent.push({ event, data });
    return true;
  };
  let n = 0;
  pusher.connect = () => {
    const transport = new Dispatcher();
    transport.bind("message", (m) => {
      try {
        pusher.delivered.push(JSON.parse(m.data));
      } catch {
        pusher.delivered.push({ event: "raw", data: m.data });
      }
    });
    connection.connection = { transport };
    connection.socket_id = `1.${++n}`;
    connection.state = "connected";
    connection.emit("connected", { socket_id: connection.socket_id });
    return transport;
  };
  return pusher;
}

const frame = (object) => ({ data: JSON.stringify(object) });
const succeeded = (channel, epoch, offset) =>
  frame({ event: "pusher_internal:subscription_succeeded", channel, data: "{}", wirehub: { epoch, offset } });
const event = (channel, epoch, offset) => frame({ event: "n", channel, data: String(offset), wirehub: { epoch, offset } });
const answer = (channel, name, data) => frame({ event: name, channel, data: JSON.stringify(data) });
const offsets = (pusher) => pusher.delivered.filter((f) => f.event === "n").map((f) => f.wirehub.offset);

function setup(options = {}) {
  const pusher = fakePusher();
  const recovered = [];
  const failed = [];
  const recovery = recover(pusher, { onRecovered: (i) => recovered.push(i), onRecoveryFailed: (i) => failed.push(i), ...options });
  return { pusher, recovery, recovered, failed };
}

test("after a resubscription: the replay and the held live events reach the app in order, each once", () => {
  const { pusher, recovered } = setup();
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  for (const o of [1, 2, 3]) t.emit("message", event("c", "E", o));
  t = pusher.connect();
  t.emit("message", succeeded("c", "E", 6));
  assert.deepEqual(pusher.sent, [{ event: "wirehub:recover", data: { channel: "c", epoch: "E", offset: 3, socket_ids: ["1.1"] } }]);
  // Live events after the new subscription, then the replay (some of it twice), then the answer.
  for (const o of [8, 7, 4, 5, 6, 7]) t.emit("message", event("c", "E", o));
  assert.deepEqual(offsets(pusher), [1, 2, 3], "held until the answer");
  t.emit("message", answer("c", "wirehub:recovered", { epoch: "E", offset: 7, replayed: 4, complete: true }));
  t.emit("message", event("c", "E", 9));
  t.emit("message", event("c", "E", 8));
  assert.deepEqual(offsets(pusher), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(recovered.length, 1);
  assert.equal(recovered[0].events, 5);
  assert.ok(!pusher.delivered.some((f) => f.event.startsWith("wirehub:")), "the answers are the connector's");
  // subscription_succeeded reached pusher-js at once, before the recovered events.
  assert.equal(pusher.delivered.filter((f) => f.event === "pusher_internal:subscription_succeeded").length, 2);
});

test("a replay in parts is asked for again from where it stopped", () => {
  const { pusher, recovered } = setup();
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  t.emit("message", event("c", "E", 1));
  t = pusher.connect();
  t.emit("message", succeeded("c", "E", 5));
  t.emit("message", event("c", "E", 6));
  t.emit("message", event("c", "E", 2));
  t.emit("message", event("c", "E", 3));
  t.emit("message", answer("c", "wirehub:recovered", { epoch: "E", offset: 3, replayed: 2, complete: false }));
  assert.deepEqual(offsets(pusher), [1, 2, 3]);
  assert.equal(pusher.sent.at(-1).data.offset, 3);
  t.emit("message", event("c", "E", 4));
  t.emit("message", event("c", "E", 5));
  t.emit("message", event("c", "E", 6));
  t.emit("message", answer("c", "wirehub:recovered", { epoch: "E", offset: 6, replayed: 3, complete: true }));
  assert.deepEqual(offsets(pusher), [1, 2, 3, 4, 5, 6]);
  assert.equal(recovered[0].rounds, 2);
});

test("a failed recovery is reported before the new subscription's events, which come once", () => {
  const { pusher, failed } = setup();
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  t.emit("message", event("c", "E", 1));
  t = pusher.connect();
  t.emit("message", succeeded("c", "F", 0));
  t.emit("message", event("c", "F", 2));
  t.emit("message", event("c", "F", 1));
  let deliveredAtFailure;
  failed.push = function (info) {
    deliveredAtFailure = offsets(pusher).length;
    return Array.prototype.push.call(this, info);
  };
  t.emit("message", answer("c", "wirehub:recovery_failed", { reason: "epoch_changed", epoch: "F", offset: 0 }));
  assert.equal(failed[0].reason, "epoch_changed");
  assert.deepEqual(failed[0].since, { epoch: "E", offset: 1 });
  assert.equal(deliveredAtFailure, 1);
  assert.deepEqual(offsets(pusher), [1, 1, 2]);
  t.emit("message", event("c", "F", 2));
  assert.deepEqual(offsets(pusher), [1, 1, 2], "offset 2 of epoch F once");
});

test("nothing published meanwhile: no request; a cache channel's replayed last event is not handed on twice", () => {
  const { pusher } = setup();
  let t = pusher.connect();
  t.emit("message", succeeded("cache-c", "E", 3));
  t.emit("message", event("cache-c", "E", 4));
  t = pusher.connect();
  t.emit("message", succeeded("cache-c", "E", 3));
  t.emit("message", event("cache-c", "E", 4));
  assert.deepEqual(pusher.sent, []);
  assert.deepEqual(offsets(pusher), [4]);
});

test("no answer within timeoutMs: reported as a timeout, held events handed on", async () => {
  const { pusher, failed } = setup({ timeoutMs: 20 });
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  t.emit("message", event("c", "E", 1));
  t = pusher.connect();
  t.emit("message", succeeded("c", "E", 4));
  t.emit("message", event("c", "E", 5));
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(failed[0]?.reason, "timeout");
  assert.deepEqual(offsets(pusher), [1, 5]);
});

test("a connection lost during a recovery: its held events are dropped, the next one starts from the last handed on", () => {
  const { pusher, recovery } = setup();
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  t.emit("message", event("c", "E", 1));
  t = pusher.connect();
  t.emit("message", succeeded("c", "E", 4));
  t.emit("message", event("c", "E", 5));
  t = pusher.connect();
  assert.equal(recovery.recovering("c"), false);
  t.emit("message", succeeded("c", "E", 6));
  assert.deepEqual(pusher.sent.at(-1).data, { channel: "c", epoch: "E", offset: 1, socket_ids: ["1.2", "1.1"] });
  for (const o of [2, 3, 4, 5, 6]) t.emit("message", event("c", "E", o));
  t.emit("message", answer("c", "wirehub:recovered", { epoch: "E", offset: 6, replayed: 5, complete: true }));
  assert.deepEqual(offsets(pusher), [1, 2, 3, 4, 5, 6]);
});

test("unsubscribe forgets the channel; unpositioned frames and other channels pass untouched; stop() removes the hooks", () => {
  const { pusher, recovery } = setup({ channels: (name) => name !== "skip" });
  let t = pusher.connect();
  t.emit("message", succeeded("c", "E", 0));
  t.emit("message", event("c", "E", 1));
  pusher.unsubscribe("c");
  assert.deepEqual(pusher.unsubscribed, ["c"]);
  assert.equal(recovery.position("c"), undefined);
  t.emit("message", frame({ event: "pusher_internal:member_added", channel: "p", data: "{}" }));
  t.emit("message", event("skip", "E", 1));
  t.emit("message", event("skip", "E", 1));
  t.emit("message", { data: "not JSON" });
  // subscription_succeeded, 1, the member event, both frames of the channel not recovered,
  // and the non-JSON frame (for pusher-js's own parser to report).
  assert.equal(pusher.delivered.length, 6);
  assert.equal(pusher.delivered.at(-1).data, "not JSON");
  recovery.stop();
  t.emit("message", event("c", "E", 1));
  assert.equal(offsets(pusher).filter((o) => o === 1).length, 4);
});

test("wirehub:gap starts a recovery; one during a recovery makes it ask again before handing on what follows the gap", () => {
  const { pusher, recovered } = setup();
  const t = pusher.connect();
  t.emit("message", succeeded("g", "E", 0));
  t.emit("message", event("g", "E", 1));
  t.emit("message", frame({ event: "wirehub:gap", channel: "g", data: "{}" }));
  assert.deepEqual(pusher.sent.at(-1).data, { channel: "g", epoch: "E", offset: 1, socket_ids: [] });
  t.emit("message", event("g", "E", 2));
  // Another gap while the recovery is under way: 3 and 4 are dropped, 5 comes live.
  t.emit("message", frame({ event: "wirehub:gap", channel: "g", data: "{}" }));
  t.emit("message", event("g", "E", 5));
  t.emit("message", answer("g", "wirehub:recovered", { epoch: "E", offset: 2, replayed: 1, complete: true }));
  assert.deepEqual(offsets(pusher), [1, 2], "5 is not handed on before 3 and 4");
  assert.equal(pusher.sent.length, 2);
  assert.equal(pusher.sent.at(-1).data.offset, 2);
  t.emit("message", event("g", "E", 3));
  t.emit("message", event("g", "E", 4));
  t.emit("message", event("g", "E", 5));
  t.emit("message", answer("g", "wirehub:recovered", { epoch: "E", offset: 5, replayed: 3, complete: true }));
  assert.deepEqual(offsets(pusher), [1, 2, 3, 4, 5]);
  assert.equal(recovered.length, 1);
  assert.equal(recovered[0].rounds, 2);
});
