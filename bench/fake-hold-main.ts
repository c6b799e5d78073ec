// The fake Ollama in a process of its own (as test/fake-ollama-main.ts runs it: instant, no delays), with a
// control port beside it for a bench that pauses its GPU: POST /hold holds every generation from then on
// before its first chunk (FakeOllama.hold), POST /release lets them all go, GET /seen?tag=T lists the
// generations whose prompt starts with T as [arrivedMs, servedMs | null] (the fake's performance.now() clock),
// GET /served?tag=T counts those served in full. Prints "<fake port> <control port>"; stops when killed.
import { FakeOllama } from "../test/fake-ollama";

const fake = new FakeOllama().start();
let release: (() => void) | undefined;

const tagged = (url: URL) => {
  const tag = url.searchParams.get("tag") ?? "";
  return fake.seen.filter((s) => typeof s.body.prompt === "string" && s.body.prompt.startsWith(tag));
};

const control = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(request) {
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/hold":
        release?.();
        release = fake.hold();
        return new Response("held");
      case "/release":
        release?.();
        release = undefined;
        return new Response("released");
      case "/seen":
        return Response.json(tagged(url).map((s) => [s.arrivedMs, s.servedMs ?? null]));
      case "/served":
        return Response.json(tagged(url).filter((s) => s.servedMs !== undefined).length);
    }
    return new Response("not found", { status: 404 });
  },
});
console.log(`${fake.port} ${control.port}`);
