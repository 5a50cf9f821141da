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
import { deleteAllEntries, ensureBase, kubectl, NAMESPACE, startRegisteredWebhook, type E2EWebhook } from './support.ts';

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

/** LIST requests the real API server has served for WorkloadEntries (its own request counter). */
async function workloadEntryLists(): Promise<number> {
  const text = (await kubectl('admin', ['get', '--raw', '/metrics'])).stdout;
  return text
    .split('\n')
    .filter((l) => l.startsWith('apiserver_request_total{') && l.includes('resource="workloadentries"') && l.includes('verb="LIST"'))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

// After an address.unique denial each event in flight (16 by default) rechecked the address
// with a list of the whole namespace, managedFields and all, up to 10 times each.
it('answers a burst of address rechecks with one list of the namespace at a time, and each from a list begun after it asked', async () => {
  const writer = new EntryWriter(loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')), NAMESPACE, 'v1');
  const plan = planRegister({ event: 'register', vps_id: 'w-holder', name: 'vps-jp-790', address: '45.76.79.1', country: 'jp' }, '1000-90', { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
  if (!plan.ok) throw new Error(plan.reason);
  await writer.apply(plan.entry);
  const before = await workloadEntryLists();
  const answers = await Promise.all(Array.from({ length: 16 }, () => writer.entriesWithAddress('45.76.79.1', 'vps-jp-791')));
  const lists = (await workloadEntryLists()) - before;
  expect(answers.every((a) => a.join() === 'vps-jp-790')).toBe(true);
  expect(lists).toBeLessThanOrEqual(2);
  // A recheck asked after the entry is gone is not answered from a list taken before.
  await deleteAllEntries();
  expect(await writer.entriesWithAddress('45.76.79.1', 'vps-jp-791')).toEqual([]);
});
