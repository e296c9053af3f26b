// The SDK's protocol types against the server's JSON Schema: `src/protocol.generated.ts` must be
// what `scripts/gen-protocol.mjs` makes of the release binary's `/schema/protocol.json`.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { parseServerMessage } from "../src/index.js";
import { Server } from "./helpers/server.js";

interface Generator {
  generate(document: unknown): string;
}

// .test-build/test/ → clients/typescript/
const generatorUrl = new URL("../../scripts/gen-protocol.mjs", import.meta.url).href;
const committedPath = fileURLToPath(new URL("../../src/protocol.generated.ts", import.meta.url));
const generator = (): Promise<Generator> => import(generatorUrl) as Promise<Generator>;

const servers: Server[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.stop("SIGKILL")));
});

describe("protocol types generated from the server's schema", () => {
  test("src/protocol.generated.ts is what the server's /schema/protocol.json generates", async () => {
    const server = await Server.start();
    servers.push(server);
    const response = await fetch(`${server.httpUrl}/schema/protocol.json`);
    assert.equal(response.status, 200);
    const schema: unknown = await response.json();
    const { generate } = await generator();
    const generated = generate(schema);
    const committed = await readFile(committedPath, "utf8");
    assert.equal(
      committed,
      generated,
      "src/protocol.generated.ts is out of date with the server's schema: run `npm run gen:protocol` " +
        "in clients/typescript (it starts target/release/wirehub, or $WIREHUB_BIN) and commit the result",
    );
  });

  test("the generator is generic: every definition, grouped schemas, tagged unions by type", async () => {
    const { generate } = await generator();
    const document = {
      title: "a protocol",
      version: 2,
      http: {
        publish_request: {
          title: "PublishRequest",
          description: "The body of a publish.",
          type: "object",
          properties: {
            channel: { type: "string" },
            data: true,
            idempotency_key: { type: ["string", "null"], description: "Optional key." },
          },
          required: ["channel", "data"],
        },
        history_reply: {
          title: "HistoryReply",
          type: "object",
          properties: {
            epoch: { type: "string" },
            messages: { type: "array", items: { $ref: "#/definitions/HistoryEntry" } },
            labels: { type: "object", additionalProperties: { type: "integer" } },
          },
          required: ["epoch", "messages"],
          definitions: {
            HistoryEntry: {
              type: "object",
              properties: { offset: { type: "integer", minimum: 0 }, data: {} },
              required: ["offset", "data"],
            },
          },
        },
      },
      events: {
        title: "Event",
        $defs: { Kind: { enum: ["a", "b"] } },
        oneOf: [
          {
            description: "Someone came.",
            type: "object",
            properties: { type: { const: "join" }, member: { $ref: "#/$defs/Kind" }, at: { type: "number" } },
            required: ["type", "member"],
          },
          {
            type: "object",
            properties: { type: { type: "string", enum: ["leave-now"] }, reason: { anyOf: [{ type: "string" }, { type: "null" }] } },
            required: ["type"],
          },
        ],
      },
    };
    const text = generate(document);
    const expect = (fragment: string): void => assert.ok(text.includes(fragment), `missing:\n${fragment}\nin:\n${text}`);
    expect("export const PROTOCOL_VERSION = 2;");
    expect("/** The body of a publish. */\nexport interface PublishRequest {");
    expect("  readonly channel: string;\n  readonly data: unknown;\n  /** Optional key. */\n  readonly idempotency_key?: string;\n}");
    expect("export interface HistoryEntry {\n  readonly offset: number;\n  readonly data: unknown;\n}");
    expect("  readonly messages: readonly HistoryEntry[];");
    expect("  readonly labels?: Readonly<Record<string, number>>;");
    expect('export type Kind = "a" | "b";');
    expect('/** Someone came. */\nexport interface JoinEvent {\n  readonly type: "join";\n  readonly member: Kind;\n  readonly at?: number;\n}');
    expect('export interface LeaveNowEvent {\n  readonly type: "leave-now";\n  readonly reason?: string;\n}');
    expect("export type Event =\n  | JoinEvent\n  | LeaveNowEvent;");
    expect('  join: { member: "string", at: "number?" },');
    expect('  "leave-now": { reason: "string?" },');
    assert.throws(
      () => generate({ a: { title: "Same", type: "string" }, b: { title: "Same", type: "number" } }),
      /both named Same/,
    );
  });

  test("frames are checked against the schema's field table", () => {
    // Every field the schema requires, of the kind it says; optional ones may be absent.
    assert.equal(parseServerMessage('{"type":"refreshed","expires":1700000000}').ok, true);
    const cases: [string, RegExp][] = [
      ['{"type":"refreshed"}', /refreshed: `expires` must be a non-negative integer/],
      ['{"type":"welcome","version":-1,"session":"s","heartbeat":30}', /`version` must be a non-negative integer/],
      ['{"type":"welcome","version":1,"session":"s","heartbeat":"30"}', /`heartbeat` must be a number/],
      ['{"type":"ack","offset":1,"duplicate":1}', /`duplicate` must be a boolean/],
    ];
    for (const [text, reason] of cases) {
      const parsed = parseServerMessage(text);
      assert.equal(parsed.ok, false, text);
      if (!parsed.ok) assert.match(parsed.reason, reason, text);
    }
  });
});
