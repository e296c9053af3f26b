import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  type Backoff,
  DEFAULT_BACKOFF,
  ReconnectSchedule,
  adviceForCloseCode,
  backoffCeiling,
  backoffDelay,
} from "../src/index.js";
import { seededRandom } from "./helpers/fake-clock.js";

const backoff = (overrides: Partial<Backoff> = {}): Backoff => ({ ...DEFAULT_BACKOFF, ...overrides });

describe("backoff schedule", () => {
  test("ceilings double up to the cap", () => {
    const got = Array.from({ length: 8 }, (_, k) => backoffCeiling(DEFAULT_BACKOFF, k));
    assert.deepEqual(got, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    assert.equal(backoffCeiling(DEFAULT_BACKOFF, 2 ** 31), 30_000);
  });

  test("full jitter is applied after the cap", () => {
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 0, 0.5), 500);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 3, 0.5), 4000);
    // At the cap the window is still the whole [0, max): 0.5 × 30 s.
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 10, 0.5), 15_000);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 10, 0), 0);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 10, 7), 30_000);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 10, Number.NaN), 0);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 10, -1), 0);
  });

  test("no jitter uses the ceiling", () => {
    assert.equal(backoffDelay(backoff({ jitter: "none" }), 2, 0.1), 4000);
  });

  test("odd parameters do not break it", () => {
    assert.equal(backoffCeiling(backoff({ multiplier: Number.NaN }), 5), 1000);
    assert.equal(backoffCeiling(backoff({ multiplier: 0.5 }), 5), 1000);
    assert.equal(backoffCeiling(backoff({ multiplier: 1e300, max: Number.MAX_VALUE }), 3), Number.MAX_VALUE);
    assert.equal(backoffCeiling(backoff({ initial: 0 }), 3), 0);
  });

  test("the schedule grows and resets only when told", () => {
    const schedule = new ReconnectSchedule(backoff({ initial: 100, max: 1000, multiplier: 3 }), () => 0.5);
    const got = Array.from({ length: 5 }, () => schedule.nextDelay("reconnect"));
    // Ceilings 100, 300, 900, 1000, 1000; half of each.
    assert.deepEqual(got, [50, 150, 450, 500, 500]);
    assert.equal(schedule.retries, 5);
    schedule.reset();
    assert.equal(schedule.nextDelay("reconnect"), 50);
  });

  test("backoff advice skips the first step", () => {
    const schedule = new ReconnectSchedule(backoff({ jitter: "none" }), () => 0);
    assert.equal(schedule.nextDelay("backoff"), 2000);
    assert.equal(schedule.nextDelay("reconnect"), 4000);
    schedule.reset();
    assert.equal(schedule.nextDelay("reconnect"), 1000);
    assert.equal(schedule.nextDelay("backoff"), 2000);
    assert.equal(schedule.nextDelay("stop"), 4000);
  });

  test("jitter draws come from the injected random source", () => {
    const draws = [0, 0.25, 0.999];
    const schedule = new ReconnectSchedule(DEFAULT_BACKOFF, () => draws.shift() ?? 0);
    assert.equal(schedule.nextDelay("reconnect"), 0);
    assert.equal(schedule.nextDelay("reconnect"), 500);
    assert.equal(schedule.nextDelay("reconnect"), 3996);
  });

  test("close codes map to the contract's ranges", () => {
    for (const code of [1000, 1001, 4200, 4250, 4299]) assert.equal(adviceForCloseCode(code), "reconnect", `${code}`);
    for (const code of [4000, 4001, 4003, 4099]) assert.equal(adviceForCloseCode(code), "stop", `${code}`);
    for (const code of [4100, 4101, 4102, 4199, 1002, 1005, 1006, 1007, 1009, 1011, 4300, 3000]) {
      assert.equal(adviceForCloseCode(code), "backoff", `${code}`);
    }
  });

  test("clients failing together spread over the whole window at the cap", () => {
    // 1000 clients, each with its own random source, all at the cap (k = 10).
    const clients = 1000;
    const buckets = new Array<number>(10).fill(0);
    for (let i = 0; i < clients; i++) {
      const schedule = new ReconnectSchedule(DEFAULT_BACKOFF, seededRandom(i + 1));
      let delay = 0;
      for (let k = 0; k <= 10; k++) delay = schedule.nextDelay("reconnect");
      assert.ok(delay >= 0 && delay < 30_000, `${delay}`);
      buckets[Math.floor(delay / 3000)]! += 1;
    }
    // Uniform: 100 per 3-second bucket; every bucket within ±40 % of that.
    for (const [i, n] of buckets.entries()) {
      assert.ok(n >= 60 && n <= 140, `bucket ${i} (${i * 3}-${i * 3 + 3} s) has ${n} of ${clients}: ${buckets.join(",")}`);
    }
  });
});
