/**
 * Work belongs to the leadership term it was started in. A fence is what the work calls
 * before every side effect (a Kubernetes write, a commit, a dead letter): it throws
 * TermEndedError once that term is over or the daemon is stopping, and the work stops there,
 * leaving the event pending for whoever leads next.
 */
export class TermEndedError extends Error {
  override name = 'TermEndedError';
}

/** Throws TermEndedError when the work's term is over; called before every side effect. */
export type Fence = () => void;

/** No fence: for callers outside a leadership term (tests, tools). */
export const NO_FENCE: Fence = () => undefined;
