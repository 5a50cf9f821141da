import { describe, expect, it } from 'vitest';
import { CommitMemory } from '../../src/sync/commit-memory.ts';

describe('what this process committed, against the desired state read back', () => {
  it.each([
    ['nothing committed for the VPS', undefined, '5-0', undefined],
    ['the state has the commit', '7-0', '7-0', undefined],
    ['the state is newer (another leader went on)', '7-0', '9-0', undefined],
    ['the state is older: the commit was lost', '7-0', '5-0', '7-0'],
    ['the state is gone: the commit was lost', '7-0', undefined, '7-0'],
  ])('%s', (_what, committed, stored, lost) => {
    const memory = new CommitMemory();
    if (committed !== undefined) memory.remember('a', committed);
    expect(memory.lostCommit('a', stored, 0)).toBe(lost);
  });

  it('keeps the newest commit per VPS, whatever order they are remembered in', () => {
    const memory = new CommitMemory();
    memory.remember('a', '9-0');
    memory.remember('a', '7-0');
    expect(memory.lostCommit('a', '8-0', 0)).toBe('9-0');
  });

  it('waits for a lost commit for its patience, then forgets it', () => {
    const memory = new CommitMemory({ patienceMs: 1_000 });
    memory.remember('a', '7-0');
    expect(memory.lostCommit('a', '5-0', 10_000)).toBe('7-0');
    expect(memory.lostCommit('a', '5-0', 11_000)).toBe('7-0');
    expect(memory.lostCommit('a', '5-0', 11_001)).toBeUndefined();
    expect(memory.lostCommit('a', '5-0', 11_002)).toBeUndefined();
  });

  it('is bounded: the VPS committed longest ago goes first', () => {
    const memory = new CommitMemory({ capacity: 2 });
    memory.remember('a', '1-0');
    memory.remember('b', '2-0');
    memory.remember('a', '3-0');
    memory.remember('c', '4-0');
    expect([memory.lostCommit('a', undefined, 0), memory.lostCommit('b', undefined, 0), memory.lostCommit('c', undefined, 0)]).toEqual(['3-0', undefined, '4-0']);
  });
});
