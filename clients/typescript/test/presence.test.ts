// Issue 11: presence through the TypeScript SDK against the real server binary
// (`target/release/wirehub`, or $WIREHUB_BIN): `client.presence(channel)`, the `join` and
// `leave` events, and the refusal for a channel without presence.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, test } from "node:test";

import WebSocket from "ws";

import { WirehubClient, WirehubError } from "../src/index.js";
import { Server, nextEvent, withTimeout } from "./helpers/server.js";

const servers: Server[] = [];
const clients: WirehubClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.close()));
  await Promise.all(servers.splice(0).map((server) => server.stop("SIGKILL")));
});

function presenceConfig(): string {
  const dir = mkdtempSync(join(tmpdir(), "wirehub-presence-"));
  const file = join(dir, "wirehub.toml");
  writeFileSync(file, '[[channels]]\npattern = "room:*"\npresence = true\n');
  return file;
}

async function connected(url: string): Promise<WirehubClient> {
  const client = new WirehubClient(url, { WebSocket, requestTimeout: 5000, backoff: { initial: 50, max: 500 } });
  clients.push(client);
  await withTimeout(client.connect(), 5000, "a connection");
  return client;
}

describe("presence against the real server", () => {
  test("issue 11: members are listed, joins and leaves arrive as events", async () => {
    const server = await Server.start(["--config", presenceConfig()]);
    servers.push(server);
    const ann = await connected(server.url);
    const ownJoin = nextEvent(ann, "join", ({ member }) => member.client === ann.session);
    await ann.subscribe("room:1", () => {});
    assert.equal((await ownJoin).channel, "room:1");

    const bob = await connected(server.url);
    const bobJoin = nextEvent(ann, "join", ({ member }) => member.client === bob.session);
    await bob.subscribe("room:1", () => {});
    const joined = await bobJoin;
    assert.deepEqual(joined.member, { client: bob.session, user: null });

    const presence = await bob.presence("room:1");
    assert.equal(presence.count, 2);
    assert.equal(presence.truncated, false);
    assert.deepEqual(
      presence.members.map((member) => member.client).sort(),
      [ann.session, bob.session].sort(),
    );

    const bobSession = bob.session;
    const bobLeave = nextEvent(ann, "leave", ({ member }) => member.client === bobSession);
    await bob.close();
    assert.equal((await bobLeave).channel, "room:1");
    assert.equal((await ann.presence("room:1")).count, 1);

    await assert.rejects(ann.presence("chat"), (error: unknown) => {
      assert.ok(error instanceof WirehubError);
      assert.equal(error.code, "presence_disabled");
      return true;
    });
  });
});
