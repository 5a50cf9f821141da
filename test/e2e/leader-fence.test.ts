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
import { leaderToken } from '../../src/policy/markers.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { kubeconfigThroughProxy } from '../harness/tcp-proxy.ts';
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

function entryFor(name: string, address = '45.76.7.7'): Parameters<EntryWriter['apply']>[0] {
  const plan = planRegister({ event: 'register', vps_id: 'v7', name, address, country: 'jp' }, '1700000000000-7', { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
  if (!plan.ok) throw new Error(plan.reason);
  return plan.entry;
}

describe('the leader fence', () => {
  it("refuses a deposed leader's late create with a conflict the daemon retries; the Lease holder's create goes through", async () => {
    // sync-b took the Lease over from sync-a (transitions 3 → 4). Created afresh: a Lease left by
    // another file's daemon would keep its acquireTime under an apply, and so its term.
    await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', LEASE, '--ignore-not-found']);
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

  // The webhook's watch of the Lease hangs (its connections to the API server frozen: no error,
  // no events), and sync-b takes the Lease over from sync-a unseen. Without a bound, sync-a's
  // late create passed for as long as the watch stayed broken: the webhook still showed sync-a's
  // term. Past the Lease's duration without a change seen, it vouches for no term.
  it("vouches for no term once its watch of the Lease is broken longer than the Lease's duration; a late create is refused, and writes pass again once it sees the Lease", async () => {
    const through = await kubeconfigThroughProxy(kubeconfigFor(inject('cluster'), 'webhook'));
    const proxied = await startRegisteredWebhook(inject('cluster'), {}, { kubeconfig: through.kubeconfig });
    try {
      const acquired = new Date().toISOString();
      const leaseOf = (holder: string, transitions: number) => ({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: LEASE, namespace: NAMESPACE }, spec: { holderIdentity: holder, leaseDurationSeconds: 3, leaseTransitions: transitions, acquireTime: acquired.replace('Z', '000Z'), renewTime: acquired.replace('Z', '000Z') } });
      await mustKubectl('admin', ['apply', '-f', '-'], leaseOf('sync-a', 5));
      const tokenA = leaderToken('sync-a', 5, acquired);
      await waitFor(async () => (await writerAs(tokenA).apply(entryFor('vps-jp-81', '45.76.8.1')).then(() => true, () => false)), "the webhook to see sync-a's term");
      through.proxy.freeze();
      const frozenAt = Date.now();
      await mustKubectl('admin', ['apply', '-f', '-'], leaseOf('sync-b', 6));
      // Past the Lease's 3 s without a change seen (sync-a's renewals would have been changes).
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, frozenAt + 3_500 - Date.now())));
      const late = await writerAs(tokenA).apply(entryFor('vps-jp-82', '45.76.8.2')).then(() => undefined, (error: unknown) => error);
      expect(late).toBeInstanceOf(TransientError);
      expect((late as Error).message).toContain('HTTP 409');
      expect((late as Error).message).toMatch(/\[ownership\.leader\] .*cannot be checked: the webhook has not seen the sync Lease change for \d+\.\d s, longer than its duration \(3 s\)/);
      expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-82'])).stderr).toContain('NotFound');
      // The watch comes back: sync-b's term is seen, its create passes, sync-a's stays refused.
      through.proxy.thaw();
      const tokenB = leaderToken('sync-b', 6, acquired);
      await waitFor(async () => (await writerAs(tokenB).apply(entryFor('vps-jp-83', '45.76.8.3')).then(() => true, () => false)), "the webhook to see sync-b's term", 60_000);
      const stillLate = await writerAs(tokenA).apply(entryFor('vps-jp-84', '45.76.8.4')).then(() => undefined, (error: unknown) => error);
      expect((stillLate as Error).message).toContain(`is not the sync Lease's term now (${tokenB})`);
    } finally {
      through.proxy.thaw();
      await proxied.stop();
      await through.proxy.stop();
      await hook.register();
    }
  });
});
