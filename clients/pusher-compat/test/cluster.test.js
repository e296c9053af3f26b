// Two nodes of the release binary on one real redis-server: Pusher events reach pusher-js
// clients of every node, whichever node's HTTP API triggered them.
// Presence members and channel counts are the cluster's.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Collector, connect, next, RedisServer, Server, startApp, subscribe, withTimeout } from "./helpers.js";

describe("two nodes on Redis", () => {
  let redis;
  /** @type {Server} */
  let nodeA;
  /** @type {Server} */
  let nodeB;
  let appA;
  let appB;
  const clients = [];

  async function client(node, app, params = {}) {
    const c = await connect(node, {
      channelAuthorization: { endpoint: `${app.url}/pusher/auth`, transport: "ajax", params },
    });
    clients.push(c);
    return c;
  }

  before(async () => {
    redis = await RedisServer.start();
    const args = ["--broker", redis.url, "--redis-prefix", `pusher-compat-${process.pid}:`];
    [nodeA, nodeB] = await Promise.all([Server.start(args), Server.start(args)]);
    [appA, appB] = await Promise.all([startApp(nodeA), startApp(nodeB)]);
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await appA?.close();
    await appB?.close();
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test("terminateUserConnections through node B closes the user's connection on node A with 4009", async () => {
    const params = { user_id: "cluster-erin" };
    const onA = await connect(nodeA, {
      channelAuthorization: { endpoint: `${appA.url}/pusher/auth`, transport: "ajax", params },
      userAuthentication: { endpoint: `${appA.url}/pusher/user-auth`, transport: "ajax", params },
    });
    clients.push(onA);
    onA.signin();
    await withTimeout(onA.user.signinDonePromise, 5_000, "signin_success on node A");
    const errors = new Collector();
    onA.connection.bind("error", errors.push);
    const closed = next(onA.connection, "disconnected", "the connection on node A to be closed");
    const response = await nodeB.sdk().terminateUserConnections("cluster-erin");
    assert.equal(response.status, 200);
    await closed;
    assert.ok(
      errors.items.some((e) => e.error?.data?.code === 4009 || e.data?.code === 4009),
      JSON.stringify(errors.items),
    );
    assert.equal(onA.connection.state, "disconnected");
  });

  test("a pusher-js client on node A gets an event triggered through node B's HTTP API", async () => {
    const onA = await client(nodeA, appA);
    const { channel } = await subscribe(onA, "cluster-orders");
    const received = next(channel, "order-shipped", "the event from node B");
    const response = await nodeB.sdk().trigger("cluster-orders", "order-shipped", { id: 9 });
    assert.equal(response.status, 200);
    assert.deepEqual(await received, { id: 9 });
  });

  test("a private channel on node A gets a v1 publish and a batch made on node B", async () => {
    const onA = await client(nodeA, appA);
    const { channel } = await subscribe(onA, "private-cluster");
    const got = new Collector();
    channel.bind("v1-event", got.push);
    channel.bind("batched", got.push);
    await nodeB.publishV1("private-cluster", { event: "v1-event", data: { from: "v1" } });
    await nodeB.sdk().triggerBatch([{ channel: "private-cluster", name: "batched", data: { from: "batch" } }]);
    assert.deepEqual(await got.waitFor(2, "both events from node B"), [{ from: "v1" }, { from: "batch" }]);
  });

  test("client events cross nodes, and not back to the sender", async () => {
    const onA = await client(nodeA, appA);
    const onB = await client(nodeB, appB);
    const { channel: atA } = await subscribe(onA, "private-cluster-chat");
    const { channel: atB } = await subscribe(onB, "private-cluster-chat");
    const echoed = new Collector();
    atA.bind("client-hi", echoed.push);
    const received = next(atB, "client-hi", "the client event on node B");
    atA.trigger("client-hi", { from: "a" });
    assert.deepEqual(await received, { from: "a" });
    const marker = next(atA, "marker", "the marker on node A");
    await nodeB.sdk().trigger("private-cluster-chat", "marker", {});
    await marker;
    assert.deepEqual(echoed.items, []);
  });

  test("socket_id exclusion holds for a socket of the other node", async () => {
    const onA = await client(nodeA, appA);
    const onB = await client(nodeB, appB);
    const { channel: atA } = await subscribe(onA, "cluster-feed");
    const { channel: atB } = await subscribe(onB, "cluster-feed");
    const seenByA = new Collector();
    atA.bind("post", seenByA.push);
    const seenByB = new Collector();
    atB.bind("post", seenByB.push);
    const sdk = nodeB.sdk();
    await sdk.trigger("cluster-feed", "post", { n: 1 }, { socket_id: onA.connection.socket_id });
    await sdk.trigger("cluster-feed", "post", { n: 2 });
    assert.deepEqual(await seenByB.waitFor(2, "both posts on node B"), [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(await seenByA.waitFor(1, "the second post on node A"), [{ n: 2 }]);
  });

  test("presence members are seen across nodes", async () => {
    const alice = await client(nodeA, appA, { user_id: "alice" });
    const { channel: room } = await subscribe(alice, "presence-cluster");
    const added = next(room, "pusher:member_added", "member_added from node B");
    const bob = await client(nodeB, appB, { user_id: "bob" });
    const [member, { data }] = await Promise.all([added, subscribe(bob, "presence-cluster")]);
    assert.equal(member.id, "bob");
    assert.equal(data.count, 2);
  });

  test("channel queries count the subscribers of every node", async () => {
    const onA = await client(nodeA, appA);
    await subscribe(onA, "cluster-counted");
    const info = await (await nodeB.sdk().get({ path: "/channels/cluster-counted", params: { info: "subscription_count" } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  });
});
