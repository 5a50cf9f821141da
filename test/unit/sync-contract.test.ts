import { outcomeFields, outcomeJsonSchema, outcomeRecordSchema } from '../../src/sync/outcome.ts';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { planBackfill } from '../../src/sync/backfill.ts';
import { eventJsonSchema, parseEvent } from '../../src/sync/event.ts';
import { planRegister } from '../../src/sync/planner.ts';
import { compareStreamIds } from '../../src/util/stream-id.ts';

const register = { event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '103.21.244.10', country: 'jp' };

describe('the event contract', () => {
  it('parses register and retire, ignoring fields it does not know', () => {
    expect(parseEvent({ ...register, labels: '{"provider":"vultr"}', occurred_at: '2026-11-21T05:00:00Z', extra: 'x' })).toEqual({
      ok: true,
      event: { ...register, labels: { provider: 'vultr' }, occurred_at: '2026-11-21T05:00:00Z' },
    });
    expect(parseEvent({ event: 'retire', vps_id: 'v1' })).toEqual({ ok: true, event: { event: 'retire', vps_id: 'v1' } });
  });

  it.each([
    [{ vps_id: 'v1' }, 'event.type', 'event is missing'],
    [{ ...register, event: 'Register' }, 'event.type', 'event "Register" is not known'],
    [{ ...register, vps_id: '' }, 'event.schema', 'vps_id: ""'],
    [{ ...register, name: 'VPS_JP_01' }, 'event.schema', 'name: "VPS_JP_01" must be a Kubernetes object name'],
    [{ ...register, labels: '["a"]' }, 'event.schema', 'labels: "[\\"a\\"]" must be a JSON object'],
    [{ ...register, occurred_at: 'yesterday' }, 'event.schema', 'occurred_at: "yesterday"'],
  ])('rejects %j with the field, value and rule', (fields, rule, reason) => {
    const parsed = parseEvent(fields);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.rejection.rule).toBe(rule);
      expect(parsed.rejection.reason).toContain(reason);
    }
  });

  it('docs/vps-event.schema.json is the schema the code uses (regenerate with npm run schema)', async () => {
    const committed = JSON.parse(await readFile(new URL('../../docs/vps-event.schema.json', import.meta.url), 'utf8')) as unknown;
    expect(committed).toEqual(eventJsonSchema());
  });

  it('docs/vps-event-outcome.schema.json is the schema of the outcome records the code writes (npm run schema)', async () => {
    const committed = JSON.parse(await readFile(new URL('../../docs/vps-event-outcome.schema.json', import.meta.url), 'utf8')) as unknown;
    expect(committed).toEqual(outcomeJsonSchema());
  });

  it("bounds what an outcome record echoes of an event's fields", () => {
    const fields = outcomeFields({ source_id: '1-0', vps_id: 'v'.repeat(10_000), event: 'register', outcome: 'dead-lettered', rule: 'event.schema', reason: 'r'.repeat(5_000), at: '2026-12-04T00:00:00.000Z' });
    const record = Object.fromEntries(fields.flatMap((_, i) => (i % 2 === 0 ? [[fields[i], fields[i + 1]]] : [])));
    expect(outcomeRecordSchema.parse(record)).toMatchObject({ outcome: 'dead-lettered' });
    expect(record.vps_id).toHaveLength(256);
    expect(record.reason).toHaveLength(1024);
  });
});

describe('planning', () => {
  it('builds the fleet entry shape with markers and refuses what the rules refuse', () => {
    const plan = planRegister({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '2606:4700:0:0::1111', country: 'jp' }, '5-0', { policy: DEFAULT_POLICY, namespace: 'airport-prod', istioApiVersion: 'v1' });
    expect(plan.ok && plan.entry.spec.address).toBe('2606:4700::1111');
    const bad = planRegister({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '10.0.0.1', country: 'jp' }, '5-0', { policy: DEFAULT_POLICY, namespace: 'airport-prod', istioApiVersion: 'v1' });
    expect(bad).toMatchObject({ ok: false, rule: 'address.public-unicast' });
    const reserved = planRegister({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '8.8.8.8', country: 'jp', labels: { app: 'x' } }, '5-0', { policy: DEFAULT_POLICY, namespace: 'airport-prod', istioApiVersion: 'v1' });
    expect(reserved).toMatchObject({ ok: false, rule: 'event.labels' });
  });

  it('orders stream ids numerically', () => {
    expect(compareStreamIds('9-0', '10-0')).toBe(-1);
    expect(compareStreamIds('10-2', '10-10')).toBe(-1);
    expect(compareStreamIds('10-0', '10-0')).toBe(0);
  });
});

describe('backfill input', () => {
  it('reads JSON arrays, {items: []} and CSV with quoted labels', () => {
    expect(planBackfill(JSON.stringify([{ vps_id: 1, name: 'vps-jp-01', address: '8.8.8.8', country: 'jp' }]), 'json').events).toHaveLength(1);
    expect(planBackfill(JSON.stringify({ items: [{ vps_id: 'a', name: 'vps-jp-01', address: '8.8.8.8', country: 'jp', labels: { tier: 'gold' } }] }), 'json').events[0]).toContain('{"tier":"gold"}');
    const csv = 'vps_id,name,address,country,labels\nv1,vps-jp-01,8.8.8.8,jp,"{""tier"":""gold""}"\nv2,vps-hk-01,1.1.1.1,hk,\n';
    expect(planBackfill(csv, 'csv')).toEqual({ events: [expect.arrayContaining(['labels', '{"tier":"gold"}']), expect.arrayContaining(['vps_id', 'v2'])], errors: [] });
  });

  it('names the row, field and value of every bad row', () => {
    const plan = planBackfill('vps_id,name,address,country\nv1,vps-jp-01,,jp\nv2,Bad Name,8.8.8.8,jp\n', 'csv');
    expect(plan.errors).toEqual([expect.stringMatching(/^line 2: address/), expect.stringMatching(/^line 3: name: .*"Bad Name"/)]);
  });
});
