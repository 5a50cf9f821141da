/**
 * The webhook's failure modes against the real API server: failurePolicy Fail closes the
 * gate for WorkloadEntries in the guarded namespace only, and a namespace deletion (run by
 * the real namespace controller) is never blocked by the ownership rule.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NAMESPACE, ensureBase, entry, kubectl, mustKubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

beforeAll(async () => {
  await ensureBase();
});

describe('failurePolicy Fail', () => {
  let hook: E2EWebhook;
  beforeAll(async () => {
    hook = await startRegisteredWebhook();
    await hook.stop(); // registered, but nothing listens any more
  });
  afterAll(async () => {
    await mustKubectl('admin', ['delete', 'validatingwebhookconfiguration,mutatingwebhookconfiguration', 'edge-registrar', '--ignore-not-found']);
  });

  it('refuses WorkloadEntry writes in the guarded namespace while the webhook is down', async () => {
    const res = await kubectl('alice', ['apply', '-f', '-'], entry({ name: 'vps-jp-41', address: '103.21.244.41' }));
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/failed calling webhook "(mutate|validate)\.workloadentries\.edge-registrar\.io"/);
    expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-41'])).code).not.toBe(0);
  });

  it('leaves everything else alone: other kinds, and WorkloadEntries in other namespaces', async () => {
    expect((await kubectl('alice', ['-n', NAMESPACE, 'create', 'configmap', 'still-works', '--from-literal=a=b'])).code).toBe(0);
    const elsewhere = { ...entry({ address: '10.0.0.1' }), metadata: { name: 'anything', namespace: 'default' } };
    expect((await kubectl('admin', ['apply', '-f', '-'], elsewhere)).code).toBe(0);
    await mustKubectl('admin', ['-n', 'default', 'delete', 'workloadentry', 'anything']);
    await mustKubectl('alice', ['-n', NAMESPACE, 'delete', 'configmap', 'still-works']);
  });
});

describe('namespace deletion', () => {
  let hook: E2EWebhook;
  beforeAll(async () => {
    hook = await startRegisteredWebhook();
  });
  afterAll(async () => {
    await hook.stop();
    await mustKubectl('admin', ['delete', 'validatingwebhookconfiguration,mutatingwebhookconfiguration', 'edge-registrar', '--ignore-not-found']);
    await ensureBase();
  });

  it('is not blocked: the namespace controller removes managed entries and the namespace goes away', async () => {
    for (const [i, address] of ['45.76.20.1', '45.76.20.2', '2a01:4f8::20'].entries()) {
      await mustKubectl('sync', ['apply', '-f', '-'], entry({ name: `vps-sg-0${i + 1}`, country: 'sg', address, managed: true }));
    }
    // A plain delete by the admin is refused for managed entries...
    expect((await kubectl('admin', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-sg-01'])).stderr).toContain('[ownership.managed]');
    // ...but deleting the namespace is not.
    const res = await kubectl('admin', ['delete', 'namespace', NAMESPACE, '--wait=false']);
    expect(res.code).toBe(0);
    await waitFor(async () => (await kubectl('admin', ['get', 'namespace', NAMESPACE])).code !== 0, 'the namespace to be gone', 90_000);
  });
});
