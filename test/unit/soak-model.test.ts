/**
 * The soak's workload model and its verdict: the model must be exactly what its events
 * say (checked against a plain replay of them), valid events must only claim what is free
 * at their place in the stream, and the verdict must find each kind of discrepancy.
 */
import { describe, expect, it } from 'vitest';
import { Random } from '../soak/random.ts';
import { discrepancies, verify, type ObservedEntry, type VerifyInput } from '../soak/verify.ts';
import { INVALID_KINDS, VALID_KINDS, Workload, type PlannedEvent } from '../soak/workload.ts';

function field(event: PlannedEvent, name: string): string | undefined {
  const i = event.fields.findIndex((f, k) => k % 2 === 0 && String(f) === name);
  return i < 0 ? undefined : String(event.fields[i + 1]);
}

/** Applies events the simplest possible way: what the cluster must hold after them. */
function replay(events: readonly PlannedEvent[]): Map<string, { vpsId: string; address: string; streamId: string }> {
  const byVps = new Map<string, { name: string; address: string; streamId: string }>();
  for (const event of events) {
    if (event.expect !== 'applied') continue;
    const vpsId = field(event, 'vps_id') ?? '';
    if (field(event, 'event') === 'retire') byVps.delete(vpsId);
    else byVps.set(vpsId, { name: field(event, 'name') ?? '', address: field(event, 'address') ?? '', streamId: event.streamId ?? '' });
  }
  return new Map([...byVps].map(([vpsId, v]) => [v.name, { vpsId, address: v.address, streamId: v.streamId }]));
}

function generate(seed: number, actions: number): { workload: Workload; events: PlannedEvent[] } {
  const workload = new Workload(new Random(seed), { fleet: 200 });
  const events: PlannedEvent[] = [];
  let clock = 0;
  const publish = (planned: PlannedEvent[]): void => {
    for (const e of planned) {
      e.streamId = `${1_000 + clock++}-0`;
      events.push(e);
    }
  };
  publish(workload.burst(100));
  for (let i = 0; i < actions; i++) publish(i % 500 === 0 ? workload.burst(80) : workload.next());
  return { workload, events };
}

describe('soak workload', () => {
  it('its model is what a plain replay of its events gives, for any seed', () => {
    for (const seed of [1, 2, 3, 42, 2026]) {
      const { workload, events } = generate(seed, 5_000);
      const replayed = replay(events);
      const expected = workload.expectedEntries();
      expect([...expected.keys()].sort()).toEqual([...replayed.keys()].sort());
      for (const [name, want] of expected) expect({ vpsId: want.vpsId, address: want.address, streamId: want.source.streamId }).toEqual(replayed.get(name));
    }
  });

  it('valid events claim only what is free at their place in the stream; handoffs claim exactly what the event before freed', () => {
    const { events } = generate(7, 5_000);
    const nameHolder = new Map<string, string>();
    const addressHolder = new Map<string, string>();
    const held = new Map<string, { name: string; address: string }>();
    events.forEach((event, i) => {
      if (event.expect !== 'applied') return;
      const vpsId = field(event, 'vps_id') ?? '';
      const previous = held.get(vpsId);
      if (previous !== undefined) {
        nameHolder.delete(previous.name);
        addressHolder.delete(previous.address);
        held.delete(vpsId);
      }
      if (field(event, 'event') === 'retire') return;
      const name = field(event, 'name') ?? '';
      const address = field(event, 'address') ?? '';
      expect(nameHolder.get(name) ?? vpsId).toBe(vpsId);
      expect(addressHolder.get(address) ?? vpsId).toBe(vpsId);
      nameHolder.set(name, vpsId);
      addressHolder.set(address, vpsId);
      held.set(vpsId, { name, address });
      if (event.kind === 'claim') {
        const before = events[i - 1] as PlannedEvent;
        const freed = before.kind === 'handoff-name' ? name : address;
        // The value claimed was the previous VPS's a moment before this event.
        expect(events.slice(0, i - 1).some((e) => e.vpsId === before.vpsId && (field(e, 'name') === freed || field(e, 'address') === freed))).toBe(true);
      }
    });
  });

  it('every kind of event occurs, and only invalid kinds expect a dead letter', () => {
    const { events } = generate(11, 10_000);
    const kinds = new Set(events.map((e) => e.kind));
    for (const kind of [...VALID_KINDS, ...INVALID_KINDS, 'claim']) expect(kinds).toContain(kind);
    for (const event of events) expect(event.expect === 'dead-letter').toBe((INVALID_KINDS as readonly string[]).includes(event.kind));
  });
});

describe('soak verdict', () => {
  const register = (streamId: string, vpsId: string, name: string, address: string): PlannedEvent => ({
    kind: 'register',
    fields: ['event', 'register', 'vps_id', vpsId, 'name', name, 'address', address, 'country', 'jp'],
    expect: 'applied',
    vpsId,
    streamId,
  });
  const invalid: PlannedEvent = { kind: 'private-address', fields: ['event', 'register', 'vps_id', 'bad-1', 'name', 'vps-jp-9', 'address', '10.0.0.1', 'country', 'jp'], expect: 'dead-letter', streamId: '3-0' };
  const first = register('1-0', 'v1', 'vps-jp-1', '45.76.0.1');
  const moved = register('2-0', 'v1', 'vps-jp-1', '45.76.0.2');
  const seen = (event: PlannedEvent): ObservedEntry => ({ name: field(event, 'name') ?? '', vpsId: event.vpsId, streamId: event.streamId, address: field(event, 'address'), country: 'jp' });
  const good: VerifyInput = {
    expected: new Map([['vps-jp-1', { name: 'vps-jp-1', vpsId: 'v1', address: '45.76.0.2', country: 'jp', source: moved }]]),
    events: [first, moved, invalid],
    finalEntries: [seen(moved)],
    deadLetterSourceIds: ['3-0'],
    pending: 0,
    history: [seen(first), seen(moved)],
    outcomes: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '2-0', outcome: 'applied' }, { sourceId: '3-0', outcome: 'dead-lettered' }],
    heard: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '2-0', outcome: 'applied' }, { sourceId: '3-0', outcome: 'dead-lettered' }],
    heardTwiceAllowed: 0,
  };

  it.each<[string, Partial<VerifyInput>, string]>([
    ['an expected entry missing', { finalEntries: [] }, 'lost'],
    ['an entry with an older state', { finalEntries: [seen(first)] }, 'wrong'],
    ['an entry nobody asked for', { finalEntries: [seen(moved), { ...seen(moved), name: 'vps-jp-7' }] }, 'wrong'],
    ['events left pending', { pending: 2 }, 'pending'],
    ['an invalid event not dead-lettered', { deadLetterSourceIds: [] }, 'deadLetterMissing'],
    ['a valid event dead-lettered', { deadLetterSourceIds: ['3-0', '2-0'] }, 'deadLetterUnexpected'],
    ['an invalid event dead-lettered twice', { deadLetterSourceIds: ['3-0', '3-0'] }, 'deadLetterDuplicated'],
    ['an older state seen after a newer one', { history: [seen(first), seen(moved), seen(first)] }, 'history'],
    ['a state no event asked for', { history: [{ ...seen(first), address: '45.76.9.9' }] }, 'history'],
    ['an event without an outcome', { outcomes: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '3-0', outcome: 'dead-lettered' }] }, 'outcomeMissing'],
    ['an applied event reported superseded', { outcomes: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '2-0', outcome: 'superseded' }, { sourceId: '3-0', outcome: 'dead-lettered' }] }, 'outcomeUntrue'],
    ['an applied event reported trimmed', { outcomes: [{ sourceId: '1-0', outcome: 'trimmed' }, { sourceId: '2-0', outcome: 'applied' }, { sourceId: '3-0', outcome: 'dead-lettered' }] }, 'outcomeUntrue'],
    ['an event with two outcomes on the stream', { outcomes: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '1-0', outcome: 'applied' }, { sourceId: '2-0', outcome: 'applied' }, { sourceId: '3-0', outcome: 'dead-lettered' }] }, 'outcomeDuplicated'],
    ['an event heard twice, none allowed', { heard: [{ sourceId: '1-0', outcome: 'applied' }, { sourceId: '1-0', outcome: 'applied' }] }, 'heardTwice'],
  ])('finds %s', (_, change, key) => {
    expect(discrepancies(verify(good))).toBe(0);
    const findings = verify({ ...good, ...change });
    expect(discrepancies(findings)).toBeGreaterThan(0);
    const value = findings[key as keyof typeof findings];
    expect(typeof value === 'number' ? value : value.length).toBeGreaterThan(0);
  });

  it('allows events heard twice up to the allowance (a failover that lost unreplicated writes), and no more', () => {
    const twice = [...good.heard, { sourceId: '1-0', outcome: 'applied' }];
    expect(discrepancies(verify({ ...good, heard: twice, heardTwiceAllowed: 1 }))).toBe(0);
    expect(discrepancies(verify({ ...good, heard: [...twice, { sourceId: '2-0', outcome: 'applied' }], heardTwiceAllowed: 1 }))).toBe(1);
  });
});
