import { outcomeFields, outcomeJsonSchema, outcomeRecordSchema } from '../../src/sync/outcome.ts';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { planBackfill } from '../../src/sync/backfill.ts';
import { eventJsonSchema, parseEvent } from '../../src/sync/event.ts';
import { planRegister } from '../../src/sync/planner.ts';
import { compareStreamIds } from '../../src/util/stream-id.ts';
import { OUTCOME_RULES } from '../../src/sync/outcome-rules.ts';
import { eventFields } from '../../src/sync/publisher.ts';

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
    [{ vps_id: 'v1' }, 'event.type', '[event.type] event: is missing; expected "register" or "retire"'],
    [{ ...register, event: 'Register' }, 'event.type', '[event.type] event: "Register" is not a known event type; expected "register" or "retire"'],
    [{ ...register, vps_id: '' }, 'event.schema', '[event.schema] vps_id: "" is empty; expected 1 to 128 characters'],
    [{ ...register, vps_id: ':abc' }, 'event.schema', '[event.schema] vps_id: ":abc" does not start with a letter or digit; expected 1 to 128 characters'],
    [{ ...register, vps_id: 'a'.repeat(129) }, 'event.schema', 'is 129 characters long, more than 128; expected'],
    [{ ...register, name: 'VPS_JP_01' }, 'event.schema', '[event.schema] name: "VPS_JP_01" is not a Kubernetes object name (lower-case DNS subdomain); expected a Kubernetes object name'],
    [{ ...register, address: undefined }, 'event.schema', "[event.schema] address: is missing; expected the VPS's public IP address, e.g. 103.21.244.10"],
    [{ ...register, address: '' }, 'event.schema', `[event.schema] address: "" is empty; expected the VPS's public IP address`],
    [{ ...register, labels: '["a"]' }, 'event.schema', '[event.schema] labels: "[\\"a\\"]" is not a JSON object of string values; expected a JSON object of string values'],
    [{ ...register, labels: '{' }, 'event.schema', '[event.schema] labels: "{" is not JSON'],
    [{ ...register, occurred_at: 'yesterday' }, 'event.schema', '[event.schema] occurred_at: "yesterday" is not an RFC 3339 time with an offset; expected an RFC 3339 time'],
  ])('rejects %j with the field, the value, what is wrong and what is expected', (fields, rule, reason) => {
    const parsed = parseEvent(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Record<string, string>);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.rejection.rule).toBe(rule);
      expect(parsed.rejection.reason).toContain(reason);
      // The validation library's own words never reach a producer.
      expect(parsed.rejection.reason).not.toMatch(/Invalid input|Too small|Too big|expected string|received undefined/);
    }
  });

  it("names every broken field, each in the webhook's form", () => {
    const parsed = parseEvent({ event: 'register', vps_id: 'v1', name: 'vps-jp-01' });
    expect(parsed.ok ? '' : parsed.rejection.reason).toBe(
      "[event.schema] address: is missing; expected the VPS's public IP address, e.g. 103.21.244.10; [event.schema] country: is missing; expected an ISO 3166-1 alpha-2 code in lower case, e.g. jp",
    );
  });

  it("the contract's vps_id rule is the parser's: its pattern accepts exactly the ids the parser accepts", async () => {
    const contract = await readFile(new URL('../../docs/event-contract.md', import.meta.url), 'utf8');
    const row = contract.split('\n').find((line) => line.startsWith('| `vps_id` |')) ?? '';
    const pattern = /`(\^[^`]+\$)`/.exec(row)?.[1];
    expect(pattern, row).toBeDefined();
    const documented = new RegExp(pattern ?? '');
    for (const id of ['1001', 'abc', 'a.b_c:d-e', 'a'.repeat(128), 'a'.repeat(129), ':abc', '.x', '-x', 'x y', 'x/y', '', 'ü']) {
      expect([id, documented.test(id)]).toEqual([id, parseEvent({ event: 'retire', vps_id: id }).ok]);
    }
  });

  it('docs/event-contract.md lists exactly the rules an outcome can carry', async () => {
    const contract = await readFile(new URL('../../docs/event-contract.md', import.meta.url), 'utf8');
    const section = contract.slice(contract.indexOf('### Why an event is dead-lettered'), contract.indexOf('### Keeping up'));
    const tableRules = [...section.matchAll(/^\| `([a-zA-Z.-]+)` \|/gm)].map((m) => m[1]);
    const contentList = section.slice(section.indexOf('any content rule of a WorkloadEntry'));
    const contentRules = [...contentList.matchAll(/`([a-zA-Z]+(?:\.[a-z-]+)?)`/g)].map((m) => m[1]);
    expect([...tableRules, ...contentRules].sort()).toEqual([...OUTCOME_RULES].sort());
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
    expect(plan.errors).toEqual([expect.stringMatching(/^line 2: \[event.schema\] address/), expect.stringMatching(/^line 3: \[event.schema\] name: "Bad Name"/)]);
  });

  it('refuses the rows the daemon would dead-letter for a content rule, given the policy', () => {
    const csv = 'vps_id,name,address,country\nv1,vps-jp-01,10.0.0.5,jp\nv2,vps-uk-01,8.8.8.8,uk\nv3,vps-jp-03,8.8.4.4,jp\n';
    expect(planBackfill(csv, 'csv').errors).toEqual([]);
    const plan = planBackfill(csv, 'csv', { policy: DEFAULT_POLICY, namespace: 'airport-prod', istioApiVersion: 'v1' });
    expect(plan.errors).toEqual([expect.stringMatching(/^line 2: \[address.public-unicast\] spec.address: "10.0.0.5" is in the private/), expect.stringMatching(/^line 3: \[labels.country\] .*"uk"/)]);
    expect(plan.events).toHaveLength(1);
  });
});

describe('publish checks an event as the daemon would', () => {
  const rules = { policy: DEFAULT_POLICY, namespace: 'airport-prod', istioApiVersion: 'v1' };
  it.each([
    [{ address: '10.0.0.5' }, 'address.public-unicast', 'spec.address: "10.0.0.5" is in the private (RFC 1918) range 10.0.0.0/8'],
    [{ country: 'uk' }, 'labels.country', '"uk"'],
    [{ labels: { app: 'x' } }, 'event.labels', 'labels: "app" is a label edge-registrar sets itself'],
    [{ address: undefined }, 'event.schema', 'address: is missing'],
  ])('refuses %j with its rule and reason', (change, rule, reason) => {
    const checked = eventFields({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '8.8.8.8', country: 'jp', ...change }, rules);
    expect(checked).toMatchObject({ ok: false, rule, message: expect.stringContaining(reason) as string });
  });

  it('passes a good register, and without the policy checks the contract alone', () => {
    expect(eventFields({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '8.8.8.8', country: 'jp' }, rules)).toMatchObject({ ok: true });
    expect(eventFields({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '10.0.0.5', country: 'jp' })).toMatchObject({ ok: true });
    expect(eventFields({ event: 'retire', vps_id: 'v1' }, rules)).toMatchObject({ ok: true });
  });
});
