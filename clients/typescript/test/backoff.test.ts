import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  type Backoff,
  DEFAULT_BACKOFF,
  MAX_HINT,
  ReconnectSchedule,
  adviceForCloseCode,
  backoffCeiling,
  backoffDelay,
  hintedDelay,
  parseRetryAfter,
  parseRetryHint,
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

describe("retry hints", () => {
  test("close reasons carry a window: MIN-MAX or one value, among other parts", () => {
    assert.deepEqual(parseRetryHint("server shutting down; retry=1200-3700"), { min: 1200, max: 3700 });
    assert.deepEqual(parseRetryHint("retry=250"), { min: 250, max: 250 });
    assert.deepEqual(parseRetryHint("a; retry=1-2; b"), { min: 1, max: 2 });
    assert.deepEqual(parseRetryHint("overloaded;retry= 4000 - 5000 "), { min: 4000, max: 5000 });
    assert.deepEqual(parseRetryHint("a; retry=x; retry=3-4"), { min: 3, max: 4 });
    assert.deepEqual(parseRetryHint(`retry=0-${10 ** 12}`), { min: 0, max: MAX_HINT });
  });

  test("reasons without a valid hint have none (the same cases as the Rust parser)", () => {
    for (const reason of [
      "",
      "server shutting down",
      "retry=",
      "retry=a-b",
      "retry=5-1",
      "retry=-5",
      "retry=1-2-3",
      "noretry=1-2",
      "retry=99999999999999999999",
      "retry=1.5-2",
      "retry=0x10",
    ]) {
      assert.equal(parseRetryHint(reason), undefined, JSON.stringify(reason));
    }
  });

  test("Retry-After in whole seconds, capped; other forms are none", () => {
    assert.equal(parseRetryAfter("7"), 7000);
    assert.equal(parseRetryAfter(" 2 "), 2000);
    assert.equal(parseRetryAfter("0"), 0);
    assert.equal(parseRetryAfter("99999999"), MAX_HINT);
    for (const value of [undefined, null, "", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5"]) {
      assert.equal(parseRetryAfter(value), undefined, String(value));
    }
  });

  test("the hinted delay: Retry-After plus part of a second, a uniform point of the window", () => {
    assert.equal(hintedDelay({ kind: "retryAfter", retryAfter: 5000 }, 0), 5000);
    assert.equal(hintedDelay({ kind: "retryAfter", retryAfter: 5000 }, 0.5), 5500);
    assert.equal(hintedDelay({ kind: "retryHint", min: 1000, max: 3000 }, 0), 1000);
    assert.equal(hintedDelay({ kind: "retryHint", min: 1000, max: 3000 }, 0.25), 1500);
    assert.equal(hintedDelay({ kind: "retryHint", min: 1000, max: 3000 }, 7), 3000);
    assert.equal(hintedDelay({ kind: "retryHint", min: 1000, max: 3000 }, Number.NaN), 1000);
    assert.equal(hintedDelay({ kind: "backoff" }, 0.5), undefined);
    // Over many draws the points cover the window and never leave it.
    const random = seededRandom(7);
    const points = Array.from({ length: 1000 }, () => hintedDelay({ kind: "retryHint", min: 1000, max: 2000 }, random())!);
    assert.ok(points.every((point) => point >= 1000 && point <= 2000));
    assert.ok(Math.min(...points) < 1050 && Math.max(...points) > 1950, "spread over the window");
  });
});
