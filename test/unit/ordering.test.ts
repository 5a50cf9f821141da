/**
 * The ordering keys of events as the consumer dispatches them, in stream order: every event
 * that may free a name or an address shares a key with every later event that claims it.
 */
import { describe, expect, it } from 'vitest';
import { HoldingsLedger, orderingKeys, type Holding } from '../../src/sync/ordering.ts';

type Step = { vpsId: string; name?: string; address?: string };

/** Dispatches the steps in order, each VPS seeded from `held` as the desired state would. */
function dispatchAll(steps: Step[], held: Record<string, Holding> = {}): string[][] {
  const ledger = new HoldingsLedger();
  for (const id of ledger.unknown(steps.map((s) => s.vpsId))) ledger.seed(id, held[id]);
  return steps.map((s) => ledger.dispatch(s));
}

const shares = (a: string[], b: string[]): boolean => a.some((k) => b.includes(k));

describe('orderingKeys', () => {
  it('canonicalises addresses, so two spellings of one IPv6 address are one key', () => {
    expect(orderingKeys({ vpsId: 'a', address: '2606:4700:0:0:0:0:0:1111' })).toEqual(['vps:a', 'address:2606:4700::1111']);
    expect(orderingKeys({ vpsId: 'a', address: '::ffff:45.76.1.1' })).toEqual(['vps:a', 'address:45.76.1.1']);
  });
});

describe('HoldingsLedger: a freeing event and a later claim share a key', () => {
  it.each<[string, Step[], Record<string, Holding>, [number, number]]>([
    ['retire, then another VPS takes its address', [{ vpsId: 'a' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.1' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' } }, [0, 1]],
    ['retire, then another VPS takes its name', [{ vpsId: 'a' }, { vpsId: 'b', name: 'vps-jp-1', address: '45.76.0.9' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' } }, [0, 1]],
    ['move, then another VPS takes the old address', [{ vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.2' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.1' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' } }, [0, 1]],
    ['rename, then another VPS takes the old name', [{ vpsId: 'a', name: 'vps-jp-9', address: '45.76.0.1' }, { vpsId: 'b', name: 'vps-jp-1', address: '45.76.0.2' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' } }, [0, 1]],
    ['register and retire in flight, then the reuse (nothing in the desired state yet)', [{ vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.1' }, { vpsId: 'a' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.1' }], {}, [1, 2]],
    ['a chain: B takes X and frees Y; C takes Y', [{ vpsId: 'a' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.1' }, { vpsId: 'c', name: 'vps-jp-3', address: '45.76.0.2' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' }, b: { name: 'vps-jp-2', address: '45.76.0.2' } }, [1, 2]],
    ['a swap through a free address: A goes back to what B freed', [{ vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.3' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.1' }, { vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.2' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' }, b: { name: 'vps-jp-2', address: '45.76.0.2' } }, [1, 2]],
  ])('%s', (_name, steps, held, [earlier, later]) => {
    const keys = dispatchAll(steps, held);
    expect(shares(keys[earlier] ?? [], keys[later] ?? [])).toBe(true);
  });

  it('unrelated VPSs share no key (they still run in parallel)', () => {
    const [a, b] = dispatchAll([{ vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.1' }, { vpsId: 'b', name: 'vps-jp-2', address: '45.76.0.2' }], { a: { name: 'vps-jp-1', address: '45.76.0.1' } });
    expect(shares(a ?? [], b ?? [])).toBe(false);
  });

  it('forgets a VPS once its last event settles, so the next one reads the desired state again', () => {
    const ledger = new HoldingsLedger();
    ledger.seed('a', { name: 'vps-jp-1', address: '45.76.0.1' });
    ledger.dispatch({ vpsId: 'a' });
    ledger.dispatch({ vpsId: 'a', name: 'vps-jp-1', address: '45.76.0.5' });
    ledger.settle('a');
    expect(ledger.unknown(['a'])).toEqual([]);
    ledger.settle('a');
    expect([ledger.unknown(['a']), ledger.size]).toEqual([['a'], 0]);
  });
});

describe('HoldingsLedger after a dispatch that failed', () => {
  // The holdings of a batch are read in rounds; when a later round failed, VPSs seeded by an
  // earlier one stayed in the ledger with no event, for good: their holdings were never read
  // again, and a claim could overtake a release of what they hold now.
  it('forgets VPSs it seeded and never gave an event, so their holdings are read again', () => {
    const ledger = new HoldingsLedger();
    ledger.seed('a', { name: 'vps-jp-1', address: '45.76.0.1' });
    ledger.seed('b', { name: 'vps-jp-2', address: '45.76.0.2' });
    ledger.dispatch({ vpsId: 'b' });
    ledger.forgetIdle(['a', 'b']);
    expect(ledger.unknown(['a', 'b'])).toEqual(['a']);
    ledger.clear();
    expect(ledger.size).toBe(0);
  });
});
