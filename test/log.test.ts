// The logger's two formats, and fetch errors put in foreman's words.
import { afterEach, beforeEach, expect, test } from "bun:test";
import { createLogger } from "../src/log";
import { fetchErrorText } from "../src/ollama/client";

let written: string[];
const original = process.stdout.write.bind(process.stdout);
beforeEach(() => {
  written = [];
  process.stdout.write = ((chunk: string) => (written.push(String(chunk)), true)) as typeof process.stdout.write;
});
afterEach(() => {
  process.stdout.write = original;
});

test("json: one object per line on stdout, an Error as its message, undefined fields left out, below the level nothing", () => {
  const log = createLogger("info", "http", "json");
  log.debug("hidden");
  log.info("request", { method: "GET", status: 200, job: undefined, error: new Error("boom") });
  expect(written).toHaveLength(1);
  expect(written[0]).toEndWith("}\n");
  const line = JSON.parse(written[0]!);
  expect(Object.keys(line)).toEqual(["time", "level", "scope", "msg", "method", "status", "error"]);
  expect(line).toEqual({
    time: line.time,
    level: "info",
    scope: "http",
    msg: "request",
    method: "GET",
    status: 200,
    error: "boom",
  });
  expect(new Date(line.time).toISOString()).toBe(line.time);
  expect([log.enabled("debug"), log.enabled("info"), log.enabled("error")]).toEqual([false, true, true]);
});

test("text: time, level, scope, message, then key=value with values quoted when they need it", () => {
  createLogger("debug", "worker", "text").warn("job failed", { job: "01J", error: "no output for 5m", n: 3 });
  expect(written).toHaveLength(1);
  expect(written[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN  \[worker\] job failed job=01J error="no output for 5m" n=3\n$/);
});

test("fetch errors read in foreman's words, without Bun's advice to developers", () => {
  const reset = Object.assign(
    new TypeError(
      "ECONNRESET: The socket connection was closed unexpectedly. For more information, pass `verbose: true` in the second argument to fetch()",
    ),
    { code: "ECONNRESET" },
  );
  expect(fetchErrorText(reset)).toBe("the connection was closed unexpectedly");
  const refused = Object.assign(new Error("ECONNREFUSED: Unable to connect. Is the computer able to access the url?"), {
    code: "ECONNREFUSED",
  });
  expect(fetchErrorText(refused)).toBe("connection refused");
  const unknown = new Error("Something odd. For more information, pass `verbose: true` in the second argument to fetch()");
  expect(fetchErrorText(unknown)).toBe("Something odd.");
  expect(fetchErrorText(new Error("The operation timed out."))).toBe("The operation timed out.");
});
