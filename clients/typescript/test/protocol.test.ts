import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { isValidChannel, parseServerMessage } from "../src/index.js";

describe("server message validation", () => {
  test("well-formed messages parse, extra fields are kept", () => {
    const message = parseServerMessage('{"type":"message","channel":"c","data":{"a":[1,2]},"offset":7,"extra":1}');
    assert.deepEqual(message, {
      ok: true,
      message: { type: "message", channel: "c", data: { a: [1, 2] }, offset: 7, extra: 1 },
    });
    const nullData = parseServerMessage('{"type":"message","channel":"c","data":null,"offset":1}');
    assert.equal(nullData.ok, true);
    assert.equal(parseServerMessage('{"type":"ack","id":3,"offset":9}').ok, true);
    assert.equal(parseServerMessage('{"type":"pong"}').ok, true);
    assert.equal(parseServerMessage('{"type":"welcome","version":1,"session":"s","heartbeat":30}').ok, true);
    assert.equal(parseServerMessage('{"type":"subscribed","id":1,"channel":"c","epoch":"e","offset":0,"recovered":false}').ok, true);
    assert.equal(parseServerMessage('{"type":"error","code":"from_the_future","message":"m"}').ok, true);
    assert.equal(parseServerMessage('{"type":"gap","channel":"c","epoch":"e","offset":5,"from":3,"to":5}').ok, true);
    assert.equal(parseServerMessage('{"type":"gap","channel":"c","epoch":"e","offset":5}').ok, true);
  });

  test("malformed frames are refused with a reason, never thrown", () => {
    const cases: [string, RegExp][] = [
      ["not json", /not valid JSON/],
      ["[]", /not a JSON object/],
      ["null", /not a JSON object/],
      ['{"offset":1}', /no string `type`/],
      ['{"type":"message","channel":"c","offset":1}', /`data` is missing/],
      ['{"type":"message","channel":"c","data":1,"offset":-1}', /`offset`/],
      ['{"type":"message","channel":"c","data":1,"offset":1.5}', /`offset`/],
      ['{"type":"message","channel":7,"data":1,"offset":1}', /`channel`/],
      ['{"type":"subscribed","channel":"c","epoch":1,"offset":0}', /`epoch`/],
      ['{"type":"subscribed","channel":"c","epoch":"e","offset":0,"recovered":"yes"}', /`recovered`/],
      ['{"type":"ack","id":"3","offset":1}', /`id`/],
      ['{"type":"ack"}', /`offset`/],
      ['{"type":"error","code":1,"message":"m"}', /`code`/],
      ['{"type":"welcome","version":1,"heartbeat":30}', /`session`/],
      ['{"type":"gap","channel":"c","epoch":"e","offset":5,"from":"3"}', /`from`/],
      ['{"type":"gap","channel":"c","offset":5}', /`epoch`/],
    ];
    for (const [text, reason] of cases) {
      const parsed = parseServerMessage(text);
      assert.equal(parsed.ok, false, text);
      if (!parsed.ok) {
        assert.match(parsed.reason, reason, text);
        assert.equal(parsed.unknownType, false, text);
      }
    }
  });

  test("unknown types are flagged as such (a newer server)", () => {
    const parsed = parseServerMessage('{"type":"novel","x":1}');
    assert.deepEqual(parsed, { ok: false, reason: 'unknown message type "novel"', unknownType: true });
  });

  test("channel names follow the protocol's rules", () => {
    for (const name of ["chat", "a", "chat:room-1", "user@example.com/inbox", "a_b.c=d+e,f#g", "x".repeat(128)]) {
      assert.equal(isValidChannel(name), true, name);
    }
    for (const name of ["", "x".repeat(129), "chat:*", "has space", "ümlaut", "new\nline", 7, null]) {
      assert.equal(isValidChannel(name), false, String(name));
    }
  });
});
