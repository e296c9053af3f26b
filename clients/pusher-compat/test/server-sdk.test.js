// The official `pusher` server SDK against the release binary: trigger, triggerBatch, the
// channel queries, a wrong signature refused as Pusher refuses it, and the server's webhooks
// checked with the SDK's own `webhook(request).isValid()`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Collector, connect, disconnect, next, PusherServer, Server, startApp, startWebhookReceiver, subscribe } from "./helpers.js";

describe("the pusher server SDK", () => {
  /** @type {Server} */
  let server;
  let app;
  let webhooks;
  const clients = [];

  async function client(params = {}) {
    const c = await connect(server, {
      channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax", params },
    });
    clients.push(c);
    return c;
  }

  /** The webhook events of `channel` received, once there are `n` of them (within 5 s). */
  async function webhookEvents(channel, n, what) {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const mine = webhooks.events.items.filter((event) => event.channel === channel);
      if (mine.length >= n) return mine;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (have ${JSON.stringify(mine)})`);
      // Wakes on the next webhook event, whichever channel it is for.
      await webhooks.events.waitFor(webhooks.events.items.length + 1, what, left).catch(() => {});
    }
  }

  before(async () => {
    webhooks = await startWebhookReceiver();
    server = await Server.start(["--pusher-webhook-url", webhooks.url]);
    app = await startApp(server);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await app.close();
    await server.stop();
    await webhooks.close();
  });

  test("trigger: 200 and {}; with info, the channel's subscription_count", async () => {
    const c = await client();
    const { channel } = await subscribe(c, "sdk-trigger");
    const received = next(channel, "hello", "hello");
    const response = await server.sdk().trigger("sdk-trigger", "hello", "a plain string");
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {});
    assert.equal(await received, "a plain string");

    const withInfo = await server.sdk().trigger("sdk-trigger", "hello", {}, { info: "subscription_count" });
    assert.deepEqual(await withInfo.json(), { channels: { "sdk-trigger": { subscription_count: 1 } } });
  });

  test("trigger to several channels at once", async () => {
    const c = await client();
    const { channel: a } = await subscribe(c, "multi-a");
    const { channel: b } = await subscribe(c, "multi-b");
    const atA = next(a, "both", "the event on multi-a");
    const atB = next(b, "both", "the event on multi-b");
    await server.sdk().trigger(["multi-a", "multi-b"], "both", { x: 1 });
    assert.deepEqual(await atA, { x: 1 });
    assert.deepEqual(await atB, { x: 1 });
  });

  test("triggerBatch delivers each event to its channel, in order", async () => {
    const c = await client();
    const { channel: one } = await subscribe(c, "batch-one");
    const { channel: two } = await subscribe(c, "batch-two");
    const atOne = new Collector();
    one.bind("step", atOne.push);
    const atTwo = next(two, "other", "the event on batch-two");
    const response = await server.sdk().triggerBatch([
      { channel: "batch-one", name: "step", data: { n: 1 } },
      { channel: "batch-two", name: "other", data: { n: 2 } },
      { channel: "batch-one", name: "step", data: { n: 3 } },
    ]);
    assert.equal(response.status, 200);
    assert.deepEqual(await atOne.waitFor(2, "two steps"), [{ n: 1 }, { n: 3 }]);
    assert.deepEqual(await atTwo, { n: 2 });

    const withInfo = await server.sdk().triggerBatch([
      { channel: "batch-one", name: "step", data: {}, info: "subscription_count" },
      { channel: "batch-two", name: "other", data: {} },
    ]);
    assert.deepEqual(await withInfo.json(), { batch: [{ subscription_count: 1 }, {}] });
  });

  test("GET /channels, with filter_by_prefix and info=user_count", async () => {
    const watcher = await client({ user_id: "u1" });
    await subscribe(watcher, "lobby-list");
    await subscribe(watcher, "presence-list");
    const second = await client({ user_id: "u2" });
    await subscribe(second, "presence-list");

    const all = await (await server.sdk().get({ path: "/channels" })).json();
    assert.ok("lobby-list" in all.channels, JSON.stringify(all));
    assert.ok("presence-list" in all.channels, JSON.stringify(all));

    const presence = await (
      await server.sdk().get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })
    ).json();
    assert.deepEqual(presence.channels["presence-list"], { user_count: 2 });
    assert.ok(!("lobby-list" in presence.channels));

    // user_count is only for presence channels.
    await assert.rejects(server.sdk().get({ path: "/channels", params: { info: "user_count" } }), (error) => error.status === 400);
  });

  test("GET /channels/C with info, and an unoccupied channel", async () => {
    const a = await client({ user_id: "x" });
    const b = await client({ user_id: "y" });
    await subscribe(a, "presence-info");
    await subscribe(b, "presence-info");
    const info = await (
      await server.sdk().get({ path: "/channels/presence-info", params: { info: "user_count,subscription_count" } })
    ).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 });

    const empty = await (await server.sdk().get({ path: "/channels/nobody-here", params: { info: "subscription_count" } })).json();
    assert.deepEqual(empty, { occupied: false, subscription_count: 0 });
  });

  test("GET /channels/C/users lists a presence channel's users", async () => {
    const a = await client({ user_id: "ann" });
    const b = await client({ user_id: "ben" });
    await subscribe(a, "presence-users");
    await subscribe(b, "presence-users");
    const body = await (await server.sdk().get({ path: "/channels/presence-users/users" })).json();
    assert.deepEqual(
      body.users.map((u) => u.id).sort(),
      ["ann", "ben"],
    );
    await assert.rejects(server.sdk().get({ path: "/channels/not-presence/users" }), (error) => error.status === 400);
  });

  test("a wrong secret or key is refused with 401, an unknown app id with 404", async () => {
    const wrong = server.sdk("not-the-app-secret");
    await assert.rejects(wrong.trigger("sdk-trigger", "hello", {}), (error) => {
      assert.equal(error.status, 401);
      assert.match(error.body, /signature/i);
      return true;
    });
    await assert.rejects(wrong.get({ path: "/channels" }), (error) => error.status === 401);
    const otherKey = new PusherServer({ appId: "1", key: "other-key", secret: "app-secret", host: "127.0.0.1", port: String(server.port), useTLS: false });
    await assert.rejects(otherKey.trigger("sdk-trigger", "hello", {}), (error) => error.status === 401);
    const otherApp = new PusherServer({ appId: "2", key: "app-key", secret: "app-secret", host: "127.0.0.1", port: String(server.port), useTLS: false });
    await assert.rejects(otherApp.trigger("sdk-trigger", "hello", {}), (error) => error.status === 404);
  });

  test("webhooks: channel_occupied and channel_vacated, signed as the SDK checks", async () => {
    const c = await client();
    await subscribe(c, "hooked");
    const [occupied] = await webhookEvents("hooked", 1, "channel_occupied");
    assert.equal(occupied.name, "channel_occupied");
    assert.ok(Math.abs(occupied.time.getTime() - Date.now()) < 60_000);
    c.unsubscribe("hooked");
    const events = await webhookEvents("hooked", 2, "channel_vacated");
    assert.deepEqual(
      events.map((e) => e.name),
      ["channel_occupied", "channel_vacated"],
    );
    assert.equal(webhooks.invalid, 0);
    const batch = webhooks.batches.at(-1);
    assert.equal(batch.headers["x-pusher-key"], "app-key");
    assert.match(batch.headers["x-pusher-signature"], /^[0-9a-f]{64}$/);
  });

  test("webhooks: member_added and member_removed", async () => {
    const first = await client({ user_id: "hook-a" });
    await subscribe(first, "presence-hooked");
    const second = await client({ user_id: "hook-b" });
    await subscribe(second, "presence-hooked");
    await disconnect(second);
    const events = await webhookEvents("presence-hooked", 4, "member webhooks");
    // channel_occupied comes from the occupancy (once per cluster), on its own schedule:
    // its place among the member events is not fixed; the member events keep their order.
    assert.equal(events.filter((e) => e.name === "channel_occupied").length, 1);
    assert.deepEqual(
      events.filter((e) => e.name !== "channel_occupied").map((e) => [e.name, e.user_id]),
      [
        ["member_added", "hook-a"],
        ["member_added", "hook-b"],
        ["member_removed", "hook-b"],
      ],
    );
    assert.equal(webhooks.invalid, 0);
  });

  test("webhooks: client_event with its data, event name and socket_id", async () => {
    const sender = await client({ user_id: "typist" });
    const { channel } = await subscribe(sender, "private-hooked");
    channel.trigger("client-typing", { who: "typist" });
    const events = await webhookEvents("private-hooked", 2, "the client_event webhook");
    const event = events.find((e) => e.name === "client_event");
    assert.ok(event, JSON.stringify(events));
    assert.equal(event.event, "client-typing");
    assert.deepEqual(JSON.parse(event.data), { who: "typist" });
    assert.equal(event.socket_id, sender.connection.socket_id);
    assert.equal(webhooks.invalid, 0);
  });
});
