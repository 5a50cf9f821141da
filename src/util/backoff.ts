/**
 * Exponential backoff with "equal jitter": the delay is between half and all of the
 * exponential ceiling, so retries of many clients spread out instead of arriving in
 * lockstep, while no retry comes back immediately.
 */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  random?: () => number;
}

export function backoffDelay(attempt: number, { baseMs, maxMs, random = Math.random }: BackoffOptions): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
