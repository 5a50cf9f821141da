/**
 * Where the consumer reads next, as an explicit state machine (pure: no I/O, no clock), the
 * way client-go's leaderelection keeps its state. The consumer's loop asks `nextRead` what to
 * do, does it against Redis, and feeds what happened back through `advance`.
 *
 * The rules it encodes:
 * - Only a leader reads, and every read belongs to one leadership term. A new term first
 *   takes over everything pending in the group (the last leader's unfinished work), then
 *   reads its own pending entries from the oldest, page by page, and only then new entries.
 * - Anything that may have lost sight of a delivery sends the reader back to the oldest
 *   pending entry, never forward to new ones: a reconnect, a failed read, a read the watchdog
 *   cut, an event left pending, entries found pending with another consumer. A cut read in
 *   particular returns nothing, which must not be mistaken for "the pending list is done".
 * - A short page of pending entries ends the pending list; a full one continues after its
 *   last entry (reading from the oldest again would return the same page, still being
 *   applied).
 */

export type ReadPosition =
  /** Not leading: nothing is read. */
  | { phase: 'idle' }
  /** Leading in `term`, but the group's pending entries have not been taken over yet. */
  | { phase: 'takeover'; term: number }
  /** Reading this consumer's own pending entries, from `after` ('0': the oldest). */
  | { phase: 'pending'; term: number; after: string }
  /** The pending list is read: new entries next ('>'). */
  | { phase: 'new'; term: number };

export type ReadEvent =
  /** The leadership term now (undefined: not leading). */
  | { kind: 'term'; term: number | undefined }
  /** Every entry pending in the group is this consumer's now. */
  | { kind: 'took-over' }
  /** A read returned `count` entries (of at most `batchSize`), the last with id `lastId`. */
  | { kind: 'read'; count: number; batchSize: number; lastId: string | undefined }
  /** The read returned nothing it can vouch for: the watchdog cut it, or the connection dropped under it. */
  | { kind: 'read-cut' }
  /** The read, or the work around it, failed. */
  | { kind: 'read-failed' }
  /** The connection was re-established: whatever was delivered before may not have been seen. */
  | { kind: 'reconnected' }
  /** An event was left pending (its term ended, or the daemon is stopping). */
  | { kind: 'left-pending' }
  /** Entries were found pending with another consumer (a deposed leader's late read): now claimed. */
  | { kind: 'strays-claimed' };

export const IDLE: ReadPosition = { phase: 'idle' };

/** Back to the oldest pending entry of this term (or to the takeover, when it never happened). */
function fromOldest(position: ReadPosition): ReadPosition {
  if (position.phase === 'idle' || position.phase === 'takeover') return position;
  return { phase: 'pending', term: position.term, after: '0' };
}

export function advance(position: ReadPosition, event: ReadEvent): ReadPosition {
  switch (event.kind) {
    case 'term':
      if (event.term === undefined) return IDLE;
      if (position.phase !== 'idle' && position.term === event.term) return position;
      return { phase: 'takeover', term: event.term };
    case 'took-over':
      return position.phase === 'takeover' ? { phase: 'pending', term: position.term, after: '0' } : position;
    case 'read':
      if (position.phase !== 'pending') return position;
      // A short page is the end of the pending list.
      if (event.count < event.batchSize || event.lastId === undefined) return { phase: 'new', term: position.term };
      return { phase: 'pending', term: position.term, after: event.lastId };
    case 'read-cut':
    case 'read-failed':
    case 'reconnected':
    case 'left-pending':
    case 'strays-claimed':
      return fromOldest(position);
  }
}

/** What the loop does next in this position. */
export type ReadAction = { kind: 'wait' } | { kind: 'take-over'; term: number } | { kind: 'read'; term: number; id: string };

export function nextRead(position: ReadPosition): ReadAction {
  switch (position.phase) {
    case 'idle':
      return { kind: 'wait' };
    case 'takeover':
      return { kind: 'take-over', term: position.term };
    case 'pending':
      return { kind: 'read', term: position.term, id: position.after };
    case 'new':
      return { kind: 'read', term: position.term, id: '>' };
  }
}
