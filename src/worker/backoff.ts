/**
 * Delay before retry number `attempt` (1-based): 1 s, 2 s, 4 s … capped at `capMs` (default 1 m),
 * with "equal jitter" (half fixed, half random) so jobs that failed together do not retry together.
 */
export function retryDelayMs(attempt: number, baseMs = 1000, capMs = 60_000, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
