import { describe, expect, it } from 'vitest';
import { EventCorrelator, MAX_REMEMBERED, type CorrelatorOptions, type Occurrence } from '../../src/kube/event-correlator.ts';

const LEASE = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: 'airport-prod', name: 'edge-registrar-sync' };
const OPTIONS: CorrelatorOptions = { objectBurst: 25, objectRefillSeconds: 300, globalBurst: 100, globalPerMinute: 60, dropsRegarding: LEASE };
const MIN = 60_000;

function applied(name: string, streamId = '1-0', uid = `uid-${name}`): Occurrence {
  return { regarding: { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', namespace: 'airport-prod', name, uid }, type: 'Normal', reason: 'Applied', action: 'Apply', note: `register from stream id ${streamId} applied` };
}

describe('the event correlator (client-go EventRecorder semantics)', () => {
  it('a repeat within 6 minutes becomes a series: the second patches count 2, later ones only count until the series is quiet', () => {
    const c = new EventCorrelator(OPTIONS, 0);
    const first = c.observe(applied('vps-jp-01'), 0);
    expect(first.write).toMatchObject({ kind: 'create' });
    const id = first.write?.id;
    expect(c.observe(applied('vps-jp-01'), 1_000).write).toEqual({ kind: 'series', id, count: 2, lastObservedAt: 1_000 });
    for (let t = 2_000; t < 10_000; t += 1_000) expect(c.observe(applied('vps-jp-01'), t)).toEqual({});
    // Still going at the 1-minute tick: nothing written (no 30 minutes yet, not quiet).
    expect(c.tick(MIN).writes).toEqual([]);
    // Quiet for 6 minutes: the final count, once, and the key is forgotten.
    const finished = c.tick(9_000 + 6 * MIN);
    expect(finished.writes).toEqual([{ kind: 'series', id, count: 10, lastObservedAt: 9_000 }]);
    expect(finished.forgotten).toEqual([id]);
    expect(c.tick(20 * MIN).writes).toEqual([]);
    // The next occurrence starts a new Event.
    expect(c.observe(applied('vps-jp-01'), 20 * MIN).write).toMatchObject({ kind: 'create' });
  });

  it('a long series has its count refreshed every 30 minutes', () => {
    const c = new EventCorrelator(OPTIONS, 0);
    c.observe(applied('a'), 0);
    c.observe(applied('a'), 1);
    const writes: number[] = [];
    for (let t = MIN; t <= 61 * MIN; t += MIN) {
      c.observe(applied('a'), t);
      for (const w of c.tick(t).writes) if (w.kind === 'series') writes.push(w.count);
    }
    // Written at 31 and 61 minutes: 30 minutes after the count-2 patch, then after that write.
    expect(writes).toEqual([33, 63]);
  });

  it('different notes are different Events (each names its stream id), the same note with another reason too', () => {
    const c = new EventCorrelator(OPTIONS, 0);
    expect(c.observe(applied('a', '1-0'), 0).write?.kind).toBe('create');
    expect(c.observe(applied('a', '2-0'), 1).write?.kind).toBe('create');
    expect(c.observe({ ...applied('a', '2-0'), reason: 'DriftRepaired' }, 2).write?.kind).toBe('create');
  });

  it('the spam filter: 25 Events of one object at once, then one more every 5 minutes', () => {
    const c = new EventCorrelator(OPTIONS, 0);
    const decisions = Array.from({ length: 30 }, (_, i) => c.observe(applied('a', `${i}-0`), 0));
    expect(decisions.filter((d) => d.write?.kind === 'create')).toHaveLength(25);
    expect(decisions.slice(25).every((d) => d.dropped === 'object-rate')).toBe(true);
    expect(c.observe(applied('a', '31-0'), 4 * MIN).dropped).toBe('object-rate');
    expect(c.observe(applied('a', '32-0'), 5 * MIN).write?.kind).toBe('create');
    // Another object is not held back by this one.
    expect(c.observe(applied('b'), 5 * MIN).write?.kind).toBe('create');
  });

  it('the global bucket bounds many objects: a burst, then the refill rate', () => {
    const c = new EventCorrelator({ ...OPTIONS, globalBurst: 10, globalPerMinute: 6 }, 0);
    const at0 = Array.from({ length: 50 }, (_, i) => c.observe(applied(`vps-${i}`), 0));
    expect(at0.filter((d) => d.write !== undefined)).toHaveLength(10);
    expect(at0.filter((d) => d.dropped === 'global-rate')).toHaveLength(40);
    // One minute later six more have been earned.
    const at1 = Array.from({ length: 50 }, (_, i) => c.observe(applied(`later-${i}`), MIN));
    expect(at1.filter((d) => d.write !== undefined)).toHaveLength(6);
  });

  it('drops fold into one series on the daemon\'s own object, which the global bucket does not stop', () => {
    const c = new EventCorrelator({ ...OPTIONS, globalBurst: 1, globalPerMinute: 0 }, 0);
    c.observe(applied('a'), 0);
    const writes = [];
    for (let i = 0; i < 100; i++) {
      expect(c.observe(applied(`b${i}`), 10 + i).dropped).toBe('global-rate');
      const notice = c.observeDrop(10 + i).write;
      if (notice) writes.push(notice);
    }
    expect(writes.map((w) => w.kind)).toEqual(['create', 'series']);
    expect(writes[0]).toMatchObject({ occurrence: { regarding: LEASE, reason: 'EventsRateLimited', type: 'Warning' } });
    expect(c.tick(10 * MIN).writes).toEqual([{ kind: 'series', id: writes[0]?.id, count: 100, lastObservedAt: 109 }]);
  });

  it(`remembers at most ${MAX_REMEMBERED} keys, forgetting the least recently seen`, () => {
    const c = new EventCorrelator({ ...OPTIONS, globalBurst: 10_000 }, 0);
    for (let i = 0; i < MAX_REMEMBERED + 10; i++) c.observe(applied(`vps-${i}`), i);
    expect(c.remembered).toBe(MAX_REMEMBERED);
    expect(c.tick(MAX_REMEMBERED + 10).forgotten).toHaveLength(10);
  });

  it('a backfill of 5,000 new entries in 2 minutes, with the defaults: at most burst + rate × minutes Events, plus the drop notice', () => {
    const c = new EventCorrelator(OPTIONS, 0);
    let creates = 0;
    let seriesWrites = 0;
    for (let i = 0; i < 5_000; i++) {
      const t = (i * 2 * MIN) / 5_000;
      const d = c.observe(applied(`vps-${i}`), t);
      if (d.write?.kind === 'create') creates++;
      if (d.dropped) {
        const n = c.observeDrop(t).write;
        if (n?.kind === 'create') creates++;
        if (n?.kind === 'series') seriesWrites++;
      }
    }
    seriesWrites += c.flush(2 * MIN).length;
    expect(creates).toBeLessThanOrEqual(100 + 60 * 2 + 1);
    expect(seriesWrites).toBe(2);
  });
});
