/** The consumer's read position: table tests on its transitions (no Redis). */
import { describe, expect, it } from 'vitest';
import { IDLE, advance, nextRead, type ReadEvent, type ReadPosition } from '../../src/sync/read-position.ts';

const pending = (after: string, term = 1): ReadPosition => ({ phase: 'pending', term, after });
const fresh = (term = 1): ReadPosition => ({ phase: 'new', term });
const read = (count: number, lastId?: string): ReadEvent => ({ kind: 'read', count, batchSize: 10, lastId });

describe('advance', () => {
  it.each<[string, ReadPosition, ReadEvent, ReadPosition]>([
    ['a standby that becomes leader takes over first', IDLE, { kind: 'term', term: 1 }, { phase: 'takeover', term: 1 }],
    ['the same term changes nothing', pending('5-0'), { kind: 'term', term: 1 }, pending('5-0')],
    ['a new term (a lapse and a renewal) takes over again', fresh(1), { kind: 'term', term: 2 }, { phase: 'takeover', term: 2 }],
    ['losing the Lease stops reading', fresh(1), { kind: 'term', term: undefined }, IDLE],
    ['after the takeover, the oldest pending entry', { phase: 'takeover', term: 3 }, { kind: 'took-over' }, pending('0', 3)],
    ['a full page of pending entries continues after its last', pending('0'), read(10, '9-0'), pending('9-0')],
    ['a short page ends the pending list', pending('9-0'), read(3, '12-0'), fresh()],
    ['an empty page ends the pending list', pending('0'), read(0), fresh()],
    // Issue: the watchdog cut a pending-list read and the empty answer was taken for a short page.
    ['a cut read of the pending list goes back to the oldest, never to new entries', pending('9-0'), { kind: 'read-cut' }, pending('0')],
    ['a cut read of new entries goes back to the oldest pending entry', fresh(), { kind: 'read-cut' }, pending('0')],
    ['a failed read goes back to the oldest pending entry', fresh(), { kind: 'read-failed' }, pending('0')],
    ['a reconnect goes back to the oldest pending entry', fresh(), { kind: 'reconnected' }, pending('0')],
    ['an event left pending sends the reader back to it', fresh(), { kind: 'left-pending' }, pending('0')],
    ["another consumer's entries, claimed, are read in stream order with ours", fresh(), { kind: 'strays-claimed' }, pending('0')],
    ['new entries keep coming as new', fresh(), read(10, '20-0'), fresh()],
    ['a failure before the takeover retries the takeover', { phase: 'takeover', term: 1 }, { kind: 'read-failed' }, { phase: 'takeover', term: 1 }],
    ['nothing moves a standby', IDLE, { kind: 'reconnected' }, IDLE],
  ])('%s', (_name, from, event, to) => {
    expect(advance(from, event)).toEqual(to);
  });
});

describe('nextRead', () => {
  it.each<[ReadPosition, ReturnType<typeof nextRead>]>([
    [IDLE, { kind: 'wait' }],
    [{ phase: 'takeover', term: 2 }, { kind: 'take-over', term: 2 }],
    [pending('0', 2), { kind: 'read', term: 2, id: '0' }],
    [pending('7-1', 2), { kind: 'read', term: 2, id: '7-1' }],
    [fresh(2), { kind: 'read', term: 2, id: '>' }],
  ])('%j → %j', (position, action) => {
    expect(nextRead(position)).toEqual(action);
  });
});
