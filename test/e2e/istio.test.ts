/**
 * What the mesh does with edge-registrar's objects, shown with Istio's own code rather than
 * asserted: istiod's configuration pipeline run in-process on the objects (meshview, built from
 * the istio.io/istio module) and `istioctl analyze` on files. Each rule's reason is shown by
 * the difference it makes to what a proxy receives, so a test fails when the claim is false.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { render, type K8sObject } from './helm-support.ts';
import { XBOARD_SIDECAR, analyze, endpointsOf, listenerOf, meshView, type AnalyzerMessage, type MeshEndpoint } from './istio-support.ts';
import { publishRegister, settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, entry, kubectl, mustKubectl, waitFor } from './support.ts';

const XRAYR_CLUSTER = 'outbound|443||xrayr.airport-prod.mesh';
const SPIFFE_XRAYR_VM = 'spiffe://cluster.local/ns/airport-prod/sa/xrayr-vm';
const REGISTERED = [
  { vpsId: 'vps-4101', name: 'vps-jp-41', address: '103.21.244.41', country: 'jp' },
  { vpsId: 'vps-4102', name: 'vps-sg-42', address: '2400:cb00:2049::42', country: 'sg' },
  { vpsId: 'vps-4103', name: 'vps-us-43', address: '104.16.0.43', country: 'us' },
];

/** The namespace as airport-prod has it (sidecar injection on, where Xboard runs). */
const NAMESPACE_OBJECT: K8sObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE, labels: { 'istio-injection': 'enabled' } } };

let bed: SyncTestBed | undefined;
let sync: RunningSync | undefined;
/** The entries the sync daemon wrote, read back from the real API server. */
let written: K8sObject[];
/** What the chart renders for Istio: ServiceAccount xrayr-vm, WorkloadGroup xrayr, ServiceEntry xrayr-nodes. */
let chartMesh: K8sObject[];

function withSpec(objects: K8sObject[], change: (spec: Record<string, any>) => void): K8sObject[] {
  return objects.map((o) => {
    const copy = structuredClone(o);
    change(copy.spec);
    return copy;
  });
}

function service(name: string, selector: Record<string, string>, port = 8080): K8sObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NAMESPACE }, spec: { selector, ports: [{ name: 'http', port, targetPort: port }] } };
}

const addresses = (endpoints: MeshEndpoint[]): string[] => endpoints.map((e) => e.address);
const sortedAddresses = (): string[] => REGISTERED.map((r) => r.address).sort((a, b) => a.localeCompare(b));

beforeAll(async () => {
  const started = await startSyncTestBed('istio');
  bed = started;
  sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), started.redisServer.url));
  for (const vps of REGISTERED) await publishRegister(started.redis, vps.vpsId, vps.name, vps.address, vps.country);
  await settled(started.redis);
  written = (JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'json'])) as { items: K8sObject[] }).items;
  expect(written.map((o) => o.metadata.name).sort()).toEqual(REGISTERED.map((r) => r.name).sort());
  chartMesh = (await render()).filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'mesh');
  expect(chartMesh.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(['ServiceAccount/xrayr-vm', 'ServiceEntry/xrayr-nodes', 'WorkloadGroup/xrayr']);
});

afterAll(async () => {
  await sync?.stop();
  if (bed !== undefined) await stopSyncTestBed(bed);
});

describe("the chart's ServiceEntry with the entries the sync daemon wrote", () => {
  it('makes every registered VPS an endpoint of xrayr.airport-prod.mesh, with its address and labels, reached in plaintext', async () => {
    const view = await meshView([NAMESPACE_OBJECT, ...chartMesh, ...written], XBOARD_SIDECAR);
    const endpoints = endpointsOf(view, XRAYR_CLUSTER);
    expect(addresses(endpoints)).toEqual(sortedAddresses());
    for (const endpoint of endpoints) {
      const vps = REGISTERED.find((r) => r.address === endpoint.address)!;
      expect(endpoint.transport).toBe('plaintext');
      expect(endpoint.tlsModeMetadata).toBe('');
      expect(endpoint.labels).toMatchObject({ app: 'xrayr', version: 'v1', country: vps.country, 'security.istio.io/tlsMode': 'disabled' });
      // The canonical service and revision Istio reports for the VPS come from our labels.
      expect(endpoint.workload).toBe(`${vps.name};${NAMESPACE};xrayr;v1;Kubernetes`);
      expect(endpoint.serviceAccount).toBe(SPIFFE_XRAYR_VM);
    }
    // Xboard's cluster offers Istio mTLS only to endpoints that say they have a sidecar.
    const cluster = view.clusters.find((c) => c.name === XRAYR_CLUSTER)!;
    expect(cluster.transportSocketMatches.map((m) => [m.name, m.match, m.transport])).toEqual([
      ['tlsMode-istio', { tlsMode: 'istio' }, 'istio-mtls'],
      ['tlsMode-disabled', {}, 'plaintext'],
    ]);
  });

  it('without our tlsMode label, the same entries get Istio mTLS, which a VPS without a sidecar cannot answer', async () => {
    const unlabelled = withSpec(written, (spec) => delete spec.labels['security.istio.io/tlsMode']);
    const endpoints = endpointsOf(await meshView([NAMESPACE_OBJECT, ...chartMesh, ...unlabelled], XBOARD_SIDECAR), XRAYR_CLUSTER);
    expect(addresses(endpoints)).toEqual(sortedAddresses());
    expect(endpoints.map((e) => [e.tlsModeMetadata, e.transport])).toEqual(REGISTERED.map(() => ['istio', 'istio-mtls']));
    // The serviceAccount is what turns it on: without one, Istio assumes no sidecar either.
    const anonymous = withSpec(unlabelled, (spec) => delete spec.serviceAccount);
    const plain = endpointsOf(await meshView([NAMESPACE_OBJECT, ...chartMesh, ...anonymous], XBOARD_SIDECAR), XRAYR_CLUSTER);
    expect(plain.map((e) => e.transport)).toEqual(REGISTERED.map(() => 'plaintext'));
  });

  it("takes only connections for xrayr.airport-prod.mesh from Xboard's :443 traffic; the seed's TCP port would take all of it", async () => {
    const chained = (objects: K8sObject[]) => meshView([NAMESPACE_OBJECT, ...objects, ...written], XBOARD_SIDECAR).then((v) => listenerOf(v, '0.0.0.0_443').filterChains);
    const chart = await chained(chartMesh);
    expect(chart.map((c) => [c.serverNames ?? [], c.filters.map((f) => f.cluster)])).toEqual([
      [['xrayr.airport-prod.mesh'], [XRAYR_CLUSTER]],
      [[], ['PassthroughCluster']],
    ]);
    // The seed's ServiceEntry (TCP, no addresses): one catch-all chain, so every outbound
    // connection to any address on port 443 (a payment API, say) would go to a VPS.
    const seed = withSpec(chartMesh.filter((o) => o.kind === 'ServiceEntry'), (spec) => (spec.ports = [{ number: 443, name: 'https', protocol: 'TCP' }]));
    const seedChains = await chained([...chartMesh.filter((o) => o.kind !== 'ServiceEntry'), ...seed]);
    expect(seedChains.map((c) => [c.serverNames ?? [], c.filters.map((f) => f.cluster)])).toEqual([[[], [XRAYR_CLUSTER]]]);
  });

  it('is exported to the managed namespace only', async () => {
    const elsewhere = await meshView([NAMESPACE_OBJECT, ...chartMesh, ...written], { type: 'sidecar', namespace: 'billing', labels: { app: 'billing' } });
    expect(elsewhere.clusters.map((c) => c.name)).not.toContain(XRAYR_CLUSTER);
    expect(elsewhere.listeners.map((l) => l.name)).not.toContain('0.0.0.0_443');
  });
});

describe('a Kubernetes Service whose selector matches an entry (labels.service-selected)', () => {
  const serviceCluster = (name: string) => `outbound|8080||${name}.${NAMESPACE}.svc.cluster.local`;

  it('pulls the VPSs into its endpoints, and the webhook refuses an entry it would select', async () => {
    const selecting = service('xrayr-admin', { app: 'xrayr' });
    const view = await meshView([NAMESPACE_OBJECT, ...chartMesh, ...written, selecting], XBOARD_SIDECAR);
    expect(addresses(endpointsOf(view, serviceCluster('xrayr-admin')))).toEqual(sortedAddresses());

    await mustKubectl('admin', ['apply', '-f', '-'], selecting);
    try {
      const candidate = entry({ name: 'vps-jp-44', address: '103.21.244.44' });
      await waitFor(async () => (await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], candidate)).stderr.includes('labels.service-selected'), 'the webhook to deny an entry the Service selects');
      const denied = await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], candidate);
      expect(denied.code).not.toBe(0);
      expect(denied.stderr).toContain('are selected by Service airport-prod/xrayr-admin (selector app=xrayr)');
    } finally {
      await mustKubectl('admin', ['-n', NAMESPACE, 'delete', 'service', 'xrayr-admin', '--wait']);
    }
  });

  it('leaves them out of Services whose selectors the rules allow', async () => {
    const allowed = [service('xboard', { app: 'xboard' }), service('xrayr-relay', { app: 'xrayr', role: 'relay' })];
    const view = await meshView([NAMESPACE_OBJECT, ...chartMesh, ...written, ...allowed], XBOARD_SIDECAR);
    for (const s of allowed) expect(endpointsOf(view, serviceCluster(s.metadata.name))).toEqual([]);
    // And the webhook admits an entry beside them.
    await mustKubectl('admin', ['apply', '-f', '-'], { apiVersion: 'v1', kind: 'List', items: allowed });
    try {
      await waitFor(async () => (await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry({ name: 'vps-jp-45', address: '103.21.244.45' }))).code === 0, 'the webhook to admit an entry no Service selects');
    } finally {
      await mustKubectl('admin', ['-n', NAMESPACE, 'delete', 'service', 'xboard', 'xrayr-relay', '--wait']);
    }
  });
});

describe('weight (weight.zero)', () => {
  it('serves weight 0 as weight 1, so 0 drains nothing; positive weights are kept', async () => {
    const weighted = written.map((o, i) => {
      const copy = structuredClone(o);
      copy.spec.weight = [0, 5, 1][i];
      return copy;
    });
    const endpoints = endpointsOf(await meshView([NAMESPACE_OBJECT, ...chartMesh, ...weighted], XBOARD_SIDECAR), XRAYR_CLUSTER);
    const weightOf = (name: string) => endpoints.find((e) => e.workload.startsWith(`${name};`))!.weight;
    expect(written.map((o) => weightOf(o.metadata.name))).toEqual([1, 5, 1]);
    const denied = await kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], entry({ name: 'vps-jp-46', address: '103.21.244.46', spec: { weight: 0 } }));
    expect(denied.stderr).toContain('weight.zero');
  });
});

describe('istioctl analyze', () => {
  const codes = (messages: AnalyzerMessage[]) => messages.map((m) => `${m.code} ${m.level} ${m.origin}`).sort();

  it("finds no error or warning in the chart's Istio objects with the managed entries", async () => {
    const messages = await analyze([NAMESPACE_OBJECT, ...chartMesh, ...written]);
    expect(messages.filter((m) => m.level !== 'Info')).toEqual([]);
  });

  // What Istio's analyzers catch, and (expected: []) what they do not, which is why the
  // webhook's rules and the doctor check those themselves.
  const broken: { name: string; change: (objects: K8sObject[]) => K8sObject[]; expected: string[] }[] = [
    {
      name: "the seed's TCP port without addresses",
      change: (objects) => objects.map((o) => (o.kind === 'ServiceEntry' ? withSpec([o], (spec) => (spec.ports = [{ number: 443, name: 'https', protocol: 'TCP' }]))[0]! : o)),
      expected: ['IST0134 Warning ServiceEntry airport-prod/xrayr-nodes'],
    },
    {
      name: 'a second ServiceEntry claiming the host with another protocol',
      change: (objects) => [...objects, { ...structuredClone(objects.find((o) => o.kind === 'ServiceEntry')!), metadata: { name: 'xrayr-http', namespace: NAMESPACE }, spec: { ...objects.find((o) => o.kind === 'ServiceEntry')!.spec, ports: [{ number: 443, name: 'http', protocol: 'HTTP' }] } }],
      expected: ['IST0177 Warning ServiceEntry airport-prod/xrayr-http', 'IST0177 Warning ServiceEntry airport-prod/xrayr-nodes'],
    },
    {
      name: 'an entry without an address',
      change: (objects) => [...objects, { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name: 'vps-jp-47', namespace: NAMESPACE }, spec: { labels: { app: 'xrayr' } } }],
      expected: ['IST0106 Error WorkloadEntry airport-prod/vps-jp-47'],
    },
    {
      name: 'an entry with a label value Kubernetes would refuse',
      change: (objects) => [...objects, { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name: 'vps-jp-48', namespace: NAMESPACE }, spec: { address: '103.21.244.48', labels: { app: 'xrayr', country: 'jp/tokyo' } } }],
      expected: ['IST0106 Error WorkloadEntry airport-prod/vps-jp-48'],
    },
    { name: 'a ServiceEntry that selects nothing (not caught)', change: (objects) => objects.filter((o) => o.kind !== 'WorkloadEntry'), expected: [] },
    { name: 'a missing ServiceAccount (not caught)', change: (objects) => objects.filter((o) => o.kind !== 'ServiceAccount'), expected: [] },
  ];

  it.each(broken)('on $name reports $expected', async ({ change, expected }) => {
    const messages = await analyze(change([NAMESPACE_OBJECT, ...chartMesh, ...written]));
    expect(codes(messages.filter((m) => m.level !== 'Info'))).toEqual(expected);
  });
});
