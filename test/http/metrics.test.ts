// GET /metrics and its token rule, in-process.
import { afterEach, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

test("/metrics needs the token by default, in Prometheus' text format", async () => {
  stack = await startInProcess({ env: { FOREMAN_TOKEN: "t0ken" } });
  const refused = await stack.request("GET", "/metrics");
  expect(refused.status).toBe(401);
  const allowed = await stack.request("GET", "/metrics", undefined, { authorization: "Bearer t0ken" });
  expect(allowed.status).toBe(200);
  expect(allowed.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const text = await allowed.text();
  expect(text).toContain("# TYPE foreman_queue_depth gauge\nforeman_queue_depth 0\n");
  expect(text).toContain("# TYPE foreman_jobs_ended_total counter");
});

test("FOREMAN_METRICS_PUBLIC=true opens /metrics, and only it, without the token", async () => {
  stack = await startInProcess({ env: { FOREMAN_TOKEN: "t0ken", FOREMAN_METRICS_PUBLIC: "true" } });
  expect((await stack.request("GET", "/metrics")).status).toBe(200);
  expect((await stack.request("GET", "/queue")).status).toBe(401);
  expect((await stack.request("POST", "/metrics")).status).toBe(401);
});
