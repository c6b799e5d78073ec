import { expect, test } from "bun:test";
import { retryDelayMs } from "../../src/worker/backoff";

test("retry delays double from 1 s, cap at 1 min, and carry up to half their length in jitter", () => {
  const low = () => 0;
  const high = () => 0.999999;
  expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 1000, 60_000, high))).toEqual([1000, 2000, 4000, 8000]);
  expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 1000, 60_000, low))).toEqual([500, 1000, 2000, 4000]);
  expect(retryDelayMs(7, 1000, 60_000, high)).toBe(60_000);
  expect(retryDelayMs(30, 1000, 60_000, low)).toBe(30_000);
});
