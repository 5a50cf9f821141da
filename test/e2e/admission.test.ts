/**
 * kubectl users against a real kube-apiserver with Istio's CRDs and our webhook registered
 * from webhook-config/: what they can write, what they are told when they cannot.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NAMESPACE, deleteAllEntries, ensureBase, entry, kubectl, mustKubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';
import { defaultedSpecLabels } from '../fixtures/entries.ts';

let hook: E2EWebhook;

beforeAll(async () => {
  await ensureBase();
  hook = await startRegisteredWebhook();
});

afterAll(async () => {
  await hook.stop();
});

beforeEach(async () => {
  await deleteAllEntries();
  await mustKubectl('admin', ['-n', NAMESPACE, 'delete', 'services', '--all']);
});

const getEntry = async (name: string): Promise<any> => JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name, '-o', 'json']));

describe('a good entry', () => {
  it('is created, and the stored object carries the mutations', async () => {
    const res = await kubectl('alice', ['apply', '-f', '-'], entry({ address: '2606:4700:0:0:0:0:0:1111' }));
    expect(res.stderr).toBe('');
    expect(res.stdout).toContain('workloadentry.networking.istio.io/vps-jp-01 created');
    const stored = await getEntry('vps-jp-01');
    expect(stored.spec).toEqual({
      address: '2606:4700::1111',
      serviceAccount: 'xrayr-vm',
      labels: defaultedSpecLabels(),
    });
  });

  it.each(['v1', 'v1beta1', 'v1alpha3'])('is guarded in networking.istio.io/%s too', async (version) => {
    const bad = { ...entry({ address: '192.168.1.10' }), apiVersion: `networking.istio.io/${version}` };
    const res = await kubectl('alice', ['apply', '-f', '-'], bad);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('address.public-unicast');
  });

  it('warnings reach kubectl: editing an entry that broke a rule before edge-registrar was installed', async () => {
    // Two entries with one address, written while no webhook was registered.
    await mustKubectl('admin', ['delete', 'validatingwebhookconfiguration,mutatingwebhookconfiguration', 'edge-registrar']);
    await waitFor(async () => (await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry({ address: '10.9.9.9' }))).code === 0, 'the API server to drop the webhook');
    await mustKubectl('alice', ['apply', '-f', '-'], entry({ name: 'vps-jp-02', address: '103.21.244.11' }));
    await mustKubectl('alice', ['apply', '-f', '-'], entry({ name: 'vps-jp-03', address: '103.21.244.11' }));
    await hook.register();
    const res = await kubectl('alice', ['-n', NAMESPACE, 'annotate', 'workloadentry', 'vps-jp-02', 'owner=ops']);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('Warning: existing violation left as is: [address.unique] spec.address: "103.21.244.11" is already used by WorkloadEntry airport-prod/vps-jp-03');
    // A new violation on the same entry is still refused.
    const worse = await kubectl('alice', ['-n', NAMESPACE, 'patch', 'workloadentry', 'vps-jp-02', '--type=merge', '-p', '{"spec":{"weight":0}}']);
    expect(worse.code).not.toBe(0);
    expect(worse.stderr).toContain('[weight.zero]');
  });
});

describe('each kind of bad entry is refused with our message naming the rule and the value', () => {
  const cases: [string, Record<string, unknown>, string[]][] = [
    ['a private IP', entry({ address: '10.0.0.5' }), ['address.public-unicast', 'spec.address: "10.0.0.5"', '10.0.0.0/8']],
    ['a hostname address', entry({ address: 'vps-jp-01.example.com' }), ['address.ip-literal', '"vps-jp-01.example.com"', 'hostname']],
    ['a wrong serviceAccount', entry({ spec: { serviceAccount: 'default' } }), ['serviceAccount.value', '"default"', '"xrayr-vm"']],
    ['a bad country', entry({ name: 'vps-uk-01', country: 'uk' }), ['labels.country', '"uk"', 'did you mean "gb"?']],
    ['ports', entry({ spec: { ports: { http: 8080 } } }), ['ports.forbidden', 'spec.ports']],
    ['weight 0', entry({ spec: { weight: 0 } }), ['weight.zero', 'spec.weight: 0']],
    ['a CGNAT address', entry({ address: '100.64.0.7' }), ['address.public-unicast', 'carrier-grade NAT']],
    ['an IPv4-mapped private address', entry({ address: '::ffff:192.168.0.1' }), ['address.public-unicast', 'IPv4-mapped form of 192.168.0.1']],
  ];

  it.each(cases)('%s', async (_name, bad, expected) => {
    const res = await kubectl('alice', ['apply', '-f', '-'], bad);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('admission webhook "validate.workloadentries.edge-registrar.io" denied the request');
    for (const text of expected) expect(res.stderr).toContain(text);
    expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'name'])).stdout).toBe('');
  });

  it.each(cases)('%s, with --dry-run=server: same answer, nothing written', async (_name, bad, expected) => {
    const res = await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], bad);
    expect(res.code).not.toBe(0);
    for (const text of expected) expect(res.stderr).toContain(text);
  });

  it('a duplicate address in another IPv6 spelling', async () => {
    await mustKubectl('alice', ['apply', '-f', '-'], entry({ address: '2606:4700::1111' }));
    const res = await kubectl('alice', ['apply', '-f', '-'], entry({ name: 'vps-jp-02', address: '2606:4700:0000:0000:0:0:0:1111' }));
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('[address.unique] spec.address: "2606:4700::1111" is already used by WorkloadEntry airport-prod/vps-jp-01');
  });

  it('labels that a Service selects, including a Service created after the webhook started', async () => {
    await mustKubectl('alice', ['-n', NAMESPACE, 'create', 'service', 'clusterip', 'xrayr-probe', '--tcp=80:80']);
    await mustKubectl('alice', ['-n', NAMESPACE, 'set', 'selector', 'service', 'xrayr-probe', 'app=xrayr']);
    await waitFor(async () => (await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry())).stderr.includes('labels.service-selected'), 'the webhook cache to see the new Service');
    const res = await kubectl('alice', ['apply', '-f', '-'], entry());
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('are selected by Service airport-prod/xrayr-probe (selector app=xrayr), so Istio would add this VPS to its endpoints');
  });

  it('every violation of one entry in one message', async () => {
    const res = await kubectl('alice', ['apply', '-f', '-'], entry({ address: '10.1.1.1', spec: { weight: 0, serviceAccount: 'default' } }));
    expect(res.stderr).toContain('violates 3 edge-registrar rules');
  });

  it('dry-run of a good entry writes nothing', async () => {
    const res = await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry());
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('(server dry run)');
    expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'name'])).stdout).toBe('');
  });
});

describe('ownership', () => {
  const managed = () => entry({ name: 'vps-hk-03', country: 'hk', address: '45.76.10.3', managed: true });

  it('the sync identity creates a managed entry; a plain user cannot edit or delete it and is told how', async () => {
    await mustKubectl('sync', ['apply', '-f', '-'], managed());
    const edit = await kubectl('alice', ['-n', NAMESPACE, 'label', 'workloadentry', 'vps-hk-03', 'tier=gold']);
    expect(edit.code).not.toBe(0);
    expect(edit.stderr).toContain('[ownership.managed]');
    expect(edit.stderr).toContain('publish a register or retire event');
    const del = await kubectl('alice', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-hk-03']);
    expect(del.code).not.toBe(0);
    expect(del.stderr).toContain('only the sync daemon may delete');
    const create = await kubectl('alice', ['apply', '-f', '-'], entry({ name: 'vps-hk-04', country: 'hk', address: '45.76.10.4', managed: true }));
    expect(create.stderr).toContain('only the sync daemon may create');
  });

  it('the break-glass user can, with a warning and an annotation', async () => {
    await mustKubectl('sync', ['apply', '-f', '-'], managed());
    const res = await kubectl('breakglass', ['-n', NAMESPACE, 'label', 'workloadentry', 'vps-hk-03', 'tier=gold']);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('Warning: break-glass: bob may change this edge-registrar-managed entry');
    expect((await getEntry('vps-hk-03')).metadata.annotations['edge-registrar.io/break-glass']).toContain('UPDATE by bob');
    const del = await kubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-hk-03']);
    expect(del.code).toBe(0);
    expect(del.stderr).toContain('Warning: break-glass: bob may delete');
  });

  it('the sync identity may delete its entry', async () => {
    await mustKubectl('sync', ['apply', '-f', '-'], managed());
    expect((await kubectl('sync', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-hk-03'])).code).toBe(0);
  });
});

describe('entries being deleted', () => {
  const gone = async (name: string): Promise<boolean> => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name])).stderr.includes('NotFound');

  it('a terminating entry is still judged by every rule; only taking its finalizers off is free', async () => {
    const held = entry();
    (held.metadata as { finalizers?: string[] }).finalizers = ['example.com/hold'];
    await mustKubectl('alice', ['apply', '-f', '-'], held);
    await mustKubectl('alice', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-01', '--wait=false']);
    expect((await getEntry('vps-jp-01')).metadata.deletionTimestamp).toBeTruthy();
    const change = await kubectl('alice', ['-n', NAMESPACE, 'patch', 'workloadentry', 'vps-jp-01', '--type=merge', '-p', JSON.stringify({ spec: { address: '10.0.0.5', labels: { 'security.istio.io/tlsMode': 'istio' } } })]);
    expect(change.code).not.toBe(0);
    expect(change.stderr).toContain('[address.public-unicast] spec.address: "10.0.0.5"');
    expect(change.stderr).toContain('[labels.tls-mode]');
    expect((await getEntry('vps-jp-01')).spec.address).toBe('103.21.244.10');
    await mustKubectl('alice', ['-n', NAMESPACE, 'patch', 'workloadentry', 'vps-jp-01', '--type=json', '-p', '[{"op":"remove","path":"/metadata/finalizers"}]']);
    await waitFor(() => gone('vps-jp-01'), 'the entry to go once its finalizer is off');
  });

  // The real kube-controller-manager's garbage collector takes its finalizer off with an
  // UPDATE as system:serviceaccount:kube-system:generic-garbage-collector.
  it.each(['foreground', 'orphan'])('the garbage collector completes a --cascade=%s deletion of a managed entry', async (cascade) => {
    await mustKubectl('sync', ['apply', '-f', '-'], entry({ name: 'vps-hk-05', country: 'hk', address: '45.76.10.5', managed: true }));
    await mustKubectl('sync', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-hk-05', `--cascade=${cascade}`, '--wait=false']);
    await waitFor(() => gone('vps-hk-05'), `the garbage collector to remove the ${cascade} finalizer and the entry`, 60_000);
  });
});

describe('the webhook follows the cluster', () => {
  it('reports each watched cache as synced only once it has listed', async () => {
    const { httpsRequest } = await import('../harness/https-client.ts');
    const metrics = (await httpsRequest(hook.webhook.port, { path: '/metrics', ca: hook.caCert })).body;
    for (const kind of ['WorkloadEntry', 'Service', 'ServiceAccount']) expect(metrics).toContain(`edge_registrar_cache_synced{resource="${kind}"} 1`);
  });

  it('an entry deleted frees its address for another', async () => {
    await mustKubectl('alice', ['apply', '-f', '-'], entry());
    await mustKubectl('alice', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-01']);
    await waitFor(async () => (await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry({ name: 'vps-jp-05' }))).code === 0, 'the cache to forget the deleted entry');
  });
});

afterAll(async () => {
  await deleteAllEntries().catch(() => undefined);
});
