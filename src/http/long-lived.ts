/**
 * Which requests may hold their connection silent for minutes. Bun.serve cuts a connection after
 * IDLE_TIMEOUT_SECONDS without a byte either way (src/server.ts), pending request included, which is
 * what closes idle keep-alive sockets and stalled bodies. A route that waits on the queue, on a model
 * load or on a feed calls {@link keepOpen} for its (authenticated) request: the timeout is lifted for
 * that connection, and the transport closes the connection after the answer, since Bun cannot put the
 * timeout back once the answer is out.
 *
 * Bun lifts the timeout only for the Request it handed over, not one rebuilt from it (the transport
 * rebuilds a request around a chunked body it read), so the transport registers both.
 */
const lifts = new WeakMap<Request, () => void>();

/** Called by the transport: `lift` lifts the idle timeout of `request`'s connection. */
export function onKeepOpen(request: Request, lift: () => void): void {
  lifts.set(request, lift);
}

/** `derived` was rebuilt from `original` (same connection): keeping it open keeps the original open. */
export function sameConnection(derived: Request, original: Request): void {
  const lift = lifts.get(original);
  if (lift) lifts.set(derived, lift);
}

/** For a route about to wait or stream for long: no idle timeout may cut this request's connection. */
export function keepOpen(request: Request): void {
  lifts.get(request)?.();
}
