/**
 * The resync's list of managed entries against the real API server: every page, and of each
 * entry only what resync compares (not managedFields, which is most of each object).
 */
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { EntryWriter } from '../../src/sync/entry-writer.ts';
import { planRegister } from '../../src/sync/planner.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { deleteAllEntries, ensureBase, NAMESPACE, startRegisteredWebhook, type E2EWebhook } from './support.ts';

let hook: E2EWebhook;

beforeAll(async () => {
  await ensureBase();
  hook = await startRegisteredWebhook();
});

afterAll(async () => {
  await deleteAllEntries();
  await hook.stop();
});

it('lists every managed entry across pages, each without its managedFields', async () => {
  const writer = new EntryWriter(loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')), NAMESPACE, 'v1');
  const names = Array.from({ length: 7 }, (_, i) => `vps-jp-${700 + i}`);
  for (const [i, name] of names.entries()) {
    const plan = planRegister({ event: 'register', vps_id: `w${i}`, name, address: `45.76.70.${i + 1}`, country: 'jp' }, `1000-${i}`, { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
    if (!plan.ok) throw new Error(plan.reason);
    await writer.apply(plan.entry);
  }
  const listed = await writer.listManaged(3);
  expect(listed.map((e) => e.metadata?.name).sort()).toEqual(names);
  for (const entry of listed) {
    expect(Object.keys(entry.metadata ?? {}).sort()).toEqual(['annotations', 'generation', 'labels', 'name', 'resourceVersion']);
    expect(entry.spec).toMatchObject({ serviceAccount: 'xrayr-vm' });
  }
});
