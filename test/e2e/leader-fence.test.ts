/**
 * The leader fence against the real API server and the real webhook: the sync daemon stamps
 * every entry it writes with its leadership term (`holder@leaseTransitions` of the sync
 * Lease), and the webhook refuses a write whose term is not the Lease's now. Creates carry no
 * resourceVersion to conflict on, so without it a deposed leader's late create landed after
 * the new leader had retired the VPS: a rename n1→n2 in flight, the new leader deletes n2, the
 * old apply re-creates it.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { EntryWriter, TransientError } from '../../src/sync/entry-writer.ts';
import { planRegister } from '../../src/sync/planner.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { NAMESPACE, deleteAllEntries, ensureBase, kubectl, mustKubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

let hook: E2EWebhook;
const LEASE = 'edge-registrar-sync';

beforeAll(async () => {
  await ensureBase();
  hook = await startRegisteredWebhook();
});

afterAll(async () => {
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', LEASE, '--ignore-not-found']);
  await deleteAllEntries();
  await hook.stop();
});

const writerAs = (token: string): EntryWriter => new EntryWriter(loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')), NAMESPACE, 'v1', () => token);

function entryFor(name: string): Parameters<EntryWriter['apply']>[0] {
  const plan = planRegister({ event: 'register', vps_id: 'v7', name, address: '45.76.7.7', country: 'jp' }, '1700000000000-7', { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
  if (!plan.ok) throw new Error(plan.reason);
  return plan.entry;
}

describe('the leader fence', () => {
  it("refuses a deposed leader's late create with a conflict the daemon retries; the Lease holder's create goes through", async () => {
    // sync-b took the Lease over from sync-a (transitions 3 → 4).
    await mustKubectl('admin', ['apply', '-f', '-'], { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: LEASE, namespace: NAMESPACE }, spec: { holderIdentity: 'sync-b', leaseDurationSeconds: 15, leaseTransitions: 4 } });
    // The webhook's watch has seen it once the holder's write is accepted.
    await waitFor(async () => (await writerAs('sync-b@4').apply(entryFor('vps-jp-77')).then(() => true, () => false)), "the webhook to see sync-b's term");
    const late = await writerAs('sync-a@3').apply(entryFor('vps-jp-78')).then(() => undefined, (error: unknown) => error);
    expect(late).toBeInstanceOf(TransientError);
    expect((late as Error).message).toContain('HTTP 409');
    expect((late as Error).message).toContain('[ownership.leader] metadata.annotations["edge-registrar.io/leader"]: "sync-a@3" is not the sync Lease\'s term now (sync-b@4)');
    expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-78'])).stderr).toContain('NotFound');
    const stored = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-77', '-o', 'json'])) as { metadata: { annotations: Record<string, string> } };
    expect(stored.metadata.annotations['edge-registrar.io/leader']).toBe('sync-b@4');
  });
});
