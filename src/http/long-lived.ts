/**
 * Which requests may hold their connection silent for minutes. Bun.serve cuts a connection after
 * IDLE_TIMEOUT_SECONDS without a byte either way (src/server.ts), pending request included, which is
 * what closes idle keep-alive sockets and stalled bodies. A route that waits on the queue, on a model
 * load or on a feed calls {@link keepOpen} for its (authenticated) request: the timeout is lifted for
 * that connection.
 *
 * Once the answer is complete the timeout must apply again, or the connection could then sit idle for
 * ever. Bun re-arms it only while the answer is still being written: before a whole answer is handed back,
 * or before a stream's last write. So the transport restores it for a whole answer itself, a stream that
 * says it will ({@link restoresAtEnd}) calls the restore before its close, and any other stream is closed
 * after its answer (`Connection: close`), since afterwards nothing can put the timeout back. A connection
 * kept alive so serves its next request at once, not after a new handshake.
 *
 * Bun lifts the timeout only for the Request it handed over, not one rebuilt from it (the transport
 * rebuilds a request around a chunked body it read), so the transport registers both.
 */
export interface IdleTimeout {
  /** No idle timeout on this connection until restored. */
  lift(): void;
  /** The idle timeout again: call while the answer's last bytes are still to be written. */
  restore(): void;
  /** Set by {@link restoresAtEnd}: the route's stream restores the timeout before its last write. */
  restoresAtEnd?: boolean;
}

const connections = new WeakMap<Request, IdleTimeout>();

/** Called by the transport: how to lift and restore the idle timeout of `request`'s connection. */
export function onKeepOpen(request: Request, timeout: IdleTimeout): void {
  connections.set(request, timeout);
}

/** `derived` was rebuilt from `original` (same connection): keeping it open keeps the original open. */
export function sameConnection(derived: Request, original: Request): void {
  const timeout = connections.get(original);
  if (timeout) connections.set(derived, timeout);
}

/** For a route about to wait or stream for long: no idle timeout may cut this request's connection. */
export function keepOpen(request: Request): void {
  connections.get(request)?.lift();
}

/**
 * For a route answering with a stream that ends on its own: the returned function restores the idle
 * timeout and is called just before the stream's close, so the connection stays alive for the next
 * request. A no-op for a request the transport does not manage (tests calling the app directly).
 */
export function restoresAtEnd(request: Request): () => void {
  const timeout = connections.get(request);
  if (!timeout) return () => {};
  timeout.restoresAtEnd = true;
  return () => timeout.restore();
}
