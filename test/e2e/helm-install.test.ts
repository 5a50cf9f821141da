/**
 * `helm install` of charts/edge-registrar into a real kube-apiserver of its own (no kubelet,
 * so no pods run), then what the chart grants checked with `kubectl auth can-i`, and the
 * self-mode certificate lifecycle run from this process with the chart's webhook identity:
 * one Secret under concurrent starts, the CA bundle injected, renewal and hot reload near
 * expiry, a restart reusing the stored certificate.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'node:tls';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createServingCertificate, serviceHostNames } from '../../src/certs/authority.ts';
import { pemBlocks } from '../../src/certs/renewal.ts';
import { SECRET_KEYS, SelfManagedCertificate } from '../../src/certs/self-managed.ts';
import { webhookConfig } from '../../src/config/webhook.ts';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { runWebhook, type RunningWebhook } from '../../src/webhook/run.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../harness/kube-cluster.ts';
import { capture } from '../harness/capture.ts';
import { shellCommandsIn, shellWords } from '../harness/doc-snippets.ts';
import { CHART, TEST_IMAGE, helm, render } from './helm-support.ts';
import { waitFor } from './support.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RELEASE_NS = 'edge-registrar';
const SECRET = 'edge-registrar-webhook-tls';
const SERVICE = 'edge-registrar-webhook';
// The harness's `webhook` user is system:serviceaccount:edge-registrar:edge-registrar-webhook:
// exactly the ServiceAccount the chart creates for release "edge-registrar".
const WEBHOOK_SA = 'system:serviceaccount:edge-registrar:edge-registrar-webhook';
const SYNC_SA = 'system:serviceaccount:edge-registrar:edge-registrar-sync';

let dir: string;
let cluster: StartedCluster;
let webhook: RunningWebhook | undefined;

const kubectl = async (args: string[]): Promise<string> => {
  const res = await cluster.kubectl('admin', args);
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr}`);
  return res.stdout;
};
const getJson = async (args: string[]): Promise<any> => JSON.parse(await kubectl([...args, '-o', 'json']));

function manager(): SelfManagedCertificate {
  return new SelfManagedCertificate({
    kubeConfig: loadKubeConfig(kubeconfigFor(cluster.state, 'webhook')),
    secretNamespace: RELEASE_NS,
    secretName: SECRET,
    mutatingWebhook: 'edge-registrar',
    validatingWebhook: 'edge-registrar',
    wants: { hosts: serviceHostNames(SERVICE, RELEASE_NS), days: 365, caDays: 3650, renewBeforeDays: 30, caCommonName: 'test CA' },
    logger: createLogger('silent', 'cert'),
  });
}

/** The certificate the webhook presents to a client that asks for the Service's name. */
function servedCertificate(port: number, ca: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: `${SERVICE}.${RELEASE_NS}.svc`, ca }, () => {
      const raw = socket.getPeerX509Certificate();
      socket.end();
      if (raw === undefined) reject(new Error('no peer certificate'));
      else resolve(raw);
    });
    socket.on('error', reject);
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-kube-helm-'));
  cluster = await startCluster({ binaries: inject('binaries'), dir, withControllerManager: false, base: false });
  // The managed namespace is the user's application namespace: it exists before the chart.
  await kubectl(['create', 'namespace', 'airport-prod']);
});

afterAll(async () => {
  await webhook?.stop();
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('helm install into a real API server', () => {
  it('installs with default values; the objects carry what they must', async () => {
    // The EndpointSlice a kind cluster's API server writes for the kubernetes Service. This one
    // advertises 127.0.0.1, which an EndpointSlice may not hold, so it runs without its endpoint
    // reconciler and the test writes what the reconciler would.
    const slice = { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'kubernetes', namespace: 'default', labels: { 'kubernetes.io/service-name': 'kubernetes' } }, addressType: 'IPv4', endpoints: [{ addresses: ['172.18.0.2'], conditions: { ready: true } }], ports: [{ name: 'https', port: 6443, protocol: 'TCP' }] };
    expect((await cluster.kubectl('admin', ['apply', '-f', '-'], JSON.stringify(slice))).code).toBe(0);
    const res = await helm(['install', 'edge-registrar', CHART, '--namespace', RELEASE_NS, '--create-namespace', '--set', TEST_IMAGE, '--set', 'sync.replicas=1', '--set', 'networkPolicy.apiServerFromEndpoints=true'], kubeconfigFor(cluster.state, 'admin'));
    expect(res.stderr).toBe('');
    expect(res.stdout).toContain('STATUS: deployed');
    // NOTES.txt tells the user how to check that entries flow.
    expect(res.stdout).toContain('XADD sigma:vps-events');

    const deployments = await getJson(['-n', RELEASE_NS, 'get', 'deployments']);
    expect(deployments.items.map((d: any) => `${d.metadata.name}=${d.spec.replicas}`).sort()).toEqual(['edge-registrar-sync=1', 'edge-registrar-webhook=2']);
    expect((await getJson(['-n', RELEASE_NS, 'get', 'pdb', 'edge-registrar-webhook'])).spec.minAvailable).toBe(1);
    const validating = await getJson(['get', 'validatingwebhookconfiguration', 'edge-registrar']);
    expect(validating.webhooks[0]).toMatchObject({ failurePolicy: 'Fail', sideEffects: 'None', clientConfig: { service: { namespace: RELEASE_NS, name: SERVICE, path: '/validate' } } });
    expect(validating.webhooks[0].clientConfig.caBundle).toBeUndefined();
    expect((await getJson(['-n', 'airport-prod', 'get', 'serviceentry', 'xrayr-nodes'])).spec.hosts).toEqual(['xrayr.airport-prod.mesh']);
    expect((await getJson(['-n', 'airport-prod', 'get', 'workloadgroup', 'xrayr'])).spec.template.serviceAccount).toBe('xrayr-vm');
    expect((await getJson(['-n', 'airport-prod', 'get', 'serviceaccount', 'xrayr-vm'])).metadata.labels['app.kubernetes.io/managed-by']).toBe('Helm');
    // Who may reach the webhook: the API server's own address, read from the kubernetes Service's endpoints at install.
    const endpoints = await getJson(['-n', 'default', 'get', 'endpointslices', '-l', 'kubernetes.io/service-name=kubernetes']);
    const apiServer = endpoints.items.flatMap((e: any) => e.endpoints.flatMap((p: any) => p.addresses)).map((a: string) => `${a}/${a.includes(':') ? 128 : 32}`);
    expect(apiServer).toEqual(['172.18.0.2/32']);
    const policy = await getJson(['-n', RELEASE_NS, 'get', 'networkpolicy', 'edge-registrar-webhook']);
    expect(policy.spec.ingress[0].from.map((f: any) => f.ipBlock.cidr)).toEqual(apiServer);
    const webhookDeployment = await getJson(['-n', RELEASE_NS, 'get', 'deployment', 'edge-registrar-webhook']);
    expect(webhookDeployment.spec.template.spec.containers[0].env).toContainEqual({ name: 'EDGE_REGISTRAR_API_SERVER_CIDRS', value: '172.18.0.2/32' });
  });

  it("doctor reads who may reach the webhook: the chart's NetworkPolicy passes, and without it the open port fails", async () => {
    const doctor = async () => {
      const res = await capture(process.execPath, [join(ROOT, 'src/cli.ts'), 'doctor', '--kubeconfig', kubeconfigFor(cluster.state, 'admin'), '--namespace', 'airport-prod', '--output', 'json']);
      return (JSON.parse(res.stdout) as { checks: { id: string; status: string; detail: string; fix?: string }[] }).checks.find((c) => c.id === 'webhook.network');
    };
    expect(await doctor()).toMatchObject({ status: 'pass', detail: expect.stringMatching(new RegExp(`^Service ${RELEASE_NS}/${SERVICE}: port 8443 admits [0-9a-f.:]+/(32|128); no pod's address is among them$`)) });
    const policy = await getJson(['-n', RELEASE_NS, 'get', 'networkpolicy', 'edge-registrar-webhook']);
    await kubectl(['-n', RELEASE_NS, 'delete', 'networkpolicy', 'edge-registrar-webhook']);
    try {
      expect(await doctor()).toMatchObject({ status: 'fail', detail: expect.stringContaining('port 8443 is open to any source (no NetworkPolicy isolates it)'), fix: expect.stringContaining('networkPolicy.apiServerCIDRs') });
    } finally {
      delete policy.metadata.resourceVersion;
      delete policy.metadata.uid;
      delete policy.metadata.creationTimestamp;
      await cluster.kubectl('admin', ['apply', '-f', '-'], JSON.stringify(policy));
    }
  });

  it("docs/attribution.md's command turns on the gateway's NetworkPolicy, and the API server takes it as rendered", async () => {
    await kubectl(['create', 'namespace', 'istio-system']);
    const kubeconfig = kubeconfigFor(cluster.state, 'admin');
    // Per-VPS metrics on first, as the section presumes (no Prometheus Operator here: its rules off).
    const on = await helm(['upgrade', 'edge-registrar', CHART, '-n', RELEASE_NS, '--reuse-values', '--set', 'perVpsMetrics.enabled=true', '--set', 'perVpsMetrics.prometheusRule.enabled=false'], kubeconfig);
    expect(on.code, on.stderr).toBe(0);
    const documented = shellCommandsIn(join(ROOT, 'docs/attribution.md')).filter((c) => c.startsWith('helm upgrade'));
    expect(documented).toHaveLength(1);
    const [, ...args] = shellWords(documented[0] ?? '');
    const res = await helm(args.map((a) => (a === 'charts/edge-registrar' ? CHART : a)), kubeconfig);
    expect(res.code, res.stderr).toBe(0);
    const policy = await getJson(['-n', 'istio-system', 'get', 'networkpolicy', 'edge-registrar-gateway-proxy-protocol']);
    expect(policy.spec.ingress[0].from).toEqual([{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] } }, { ipBlock: { cidr: '::/0' } }]);
  });

  it('kubectl auth can-i: each ServiceAccount can do what it needs and nothing more', async () => {
    const can = async (user: string, verb: string, resource: string, namespace?: string): Promise<boolean> => {
      const res = await cluster.kubectl('admin', ['auth', 'can-i', verb, resource, '--as', user, ...(namespace ? ['-n', namespace] : [])]);
      return res.stdout.trim() === 'yes';
    };
    const table: [string, string, string, string | undefined, boolean][] = [
      [WEBHOOK_SA, 'watch', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [WEBHOOK_SA, 'list', 'services', 'airport-prod', true],
      [WEBHOOK_SA, 'list', 'serviceaccounts', 'airport-prod', true],
      [WEBHOOK_SA, 'create', 'workloadentries.networking.istio.io', 'airport-prod', false],
      [WEBHOOK_SA, 'delete', 'workloadentries.networking.istio.io', 'airport-prod', false],
      [WEBHOOK_SA, 'list', 'workloadentries.networking.istio.io', 'default', false],
      [WEBHOOK_SA, 'get', `secrets/${SECRET}`, RELEASE_NS, true],
      [WEBHOOK_SA, 'update', `secrets/${SECRET}`, RELEASE_NS, true],
      [WEBHOOK_SA, 'create', 'secrets', RELEASE_NS, true],
      [WEBHOOK_SA, 'get', 'secrets/other', RELEASE_NS, false],
      [WEBHOOK_SA, 'list', 'secrets', RELEASE_NS, false],
      [WEBHOOK_SA, 'create', 'secrets', 'airport-prod', false],
      [WEBHOOK_SA, 'patch', 'mutatingwebhookconfigurations/edge-registrar', undefined, true],
      [WEBHOOK_SA, 'patch', 'validatingwebhookconfigurations/edge-registrar', undefined, true],
      [WEBHOOK_SA, 'patch', 'validatingwebhookconfigurations/someone-else', undefined, false],
      [WEBHOOK_SA, 'delete', 'validatingwebhookconfigurations/edge-registrar', undefined, false],
      [WEBHOOK_SA, 'list', 'validatingwebhookconfigurations', undefined, false],
      [SYNC_SA, 'create', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [SYNC_SA, 'patch', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [SYNC_SA, 'delete', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [SYNC_SA, 'list', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [SYNC_SA, 'get', 'workloadentries.networking.istio.io', 'airport-prod', true],
      [SYNC_SA, 'update', 'workloadentries.networking.istio.io', 'airport-prod', false],
      [SYNC_SA, 'watch', 'workloadentries.networking.istio.io', 'airport-prod', false],
      [SYNC_SA, 'get', 'leases.coordination.k8s.io/edge-registrar-sync', 'airport-prod', true],
      [SYNC_SA, 'create', 'workloadentries.networking.istio.io', 'default', false],
      [SYNC_SA, 'deletecollection', 'workloadentries.networking.istio.io', 'airport-prod', false],
      [SYNC_SA, 'create', 'leases.coordination.k8s.io', 'airport-prod', true],
      [SYNC_SA, 'update', 'leases.coordination.k8s.io/edge-registrar-sync', 'airport-prod', true],
      [SYNC_SA, 'update', 'leases.coordination.k8s.io/someone-else', 'airport-prod', false],
      [SYNC_SA, 'get', 'secrets', 'airport-prod', false],
      [SYNC_SA, 'get', 'secrets', RELEASE_NS, false],
      [SYNC_SA, 'list', 'pods', 'airport-prod', false],
      [SYNC_SA, 'create', 'serviceentries.networking.istio.io', 'airport-prod', false],
      // Events about its entries and its Lease: create, and patch a series' count; nothing else.
      [SYNC_SA, 'create', 'events.events.k8s.io', 'airport-prod', true],
      [SYNC_SA, 'patch', 'events.events.k8s.io', 'airport-prod', true],
      [SYNC_SA, 'get', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'list', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'watch', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'update', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'delete', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'deletecollection', 'events.events.k8s.io', 'airport-prod', false],
      [SYNC_SA, 'create', 'events.events.k8s.io', 'default', false],
      [SYNC_SA, 'create', 'events', 'airport-prod', false],
      [WEBHOOK_SA, 'create', 'events.events.k8s.io', 'airport-prod', false],
    ];
    const results = await Promise.all(table.map(async ([user, verb, resource, ns]) => can(user, verb, resource, ns)));
    const wrong = table.filter((row, i) => results[i] !== row[4]).map(([user, verb, resource, ns, want]) => `${user.split(':').at(-1)} ${verb} ${resource} -n ${ns ?? '(cluster)'}: want ${want ? 'yes' : 'no'}`);
    expect(wrong).toEqual([]);
  });
});

describe('self-mode certificate lifecycle against the real API server, as the chart grants it', () => {
  it('replicas starting at once agree on one certificate; the CA bundle is injected into both configurations', async () => {
    const results = await Promise.all([manager().reconcile(), manager().reconcile(), manager().reconcile()]);
    expect(results.map((r) => r.action).sort()).toEqual(['created', 'used', 'used']);
    expect(new Set(results.map((r) => r.stored.cert)).size).toBe(1);
    const secret = await getJson(['-n', RELEASE_NS, 'get', 'secret', SECRET]);
    expect(secret.type).toBe('kubernetes.io/tls');
    expect(Buffer.from(secret.data[SECRET_KEYS.cert], 'base64').toString()).toBe(results[0].stored.cert);
    const bundle = Buffer.from(results[0].stored.caBundle).toString('base64');
    for (const kind of ['mutatingwebhookconfiguration', 'validatingwebhookconfiguration']) {
      expect((await getJson(['get', kind, 'edge-registrar'])).webhooks[0].clientConfig.caBundle).toBe(bundle);
    }
    // A restarted replica reuses the stored certificate and writes nothing.
    const before = secret.metadata.resourceVersion;
    expect((await manager().reconcile()).action).toBe('used');
    expect((await getJson(['-n', RELEASE_NS, 'get', 'secret', SECRET])).metadata.resourceVersion).toBe(before);
    // helm upgrade leaves the injected caBundle alone (the template does not set it).
    const upgraded = await helm(['upgrade', 'edge-registrar', CHART, '--namespace', RELEASE_NS, '--set', TEST_IMAGE, '--set', 'sync.replicas=1', '--set', 'networkPolicy.apiServerFromEndpoints=true', '--set', 'webhook.timeoutSeconds=7'], kubeconfigFor(cluster.state, 'admin'));
    expect(upgraded.code, upgraded.stderr).toBe(0);
    const after = await getJson(['get', 'validatingwebhookconfiguration', 'edge-registrar']);
    expect(after.webhooks[0].timeoutSeconds).toBe(7);
    expect(after.webhooks[0].clientConfig.caBundle).toBe(bundle);
  });

  it('the running webhook serves the stored certificate, renews it near expiry and swaps it in without a restart', async () => {
    const config = webhookConfig(
      {
        host: '127.0.0.1',
        port: '0',
        kubeconfig: kubeconfigFor(cluster.state, 'webhook'),
        certMode: 'self',
        certSecret: SECRET,
        certSecretNamespace: RELEASE_NS,
        service: SERVICE,
        mutatingWebhook: 'edge-registrar',
        validatingWebhook: 'edge-registrar',
      },
      { EDGE_REGISTRAR_CERT_CHECK_INTERVAL_SECONDS: '1' },
    );
    webhook = await runWebhook({ ...config, shutdownDelayMs: 0 }, createLogger(process.env.E2E_LOG_LEVEL === undefined ? 'silent' : 'info', 'webhook'));
    const stored = (await manager().reconcile()).stored;
    const served = await servedCertificate(webhook.port, stored.caBundle);
    expect(served.fingerprint256).toBe(new X509Certificate(stored.cert).fingerprint256);

    // Time passes: put a certificate with one day left into the Secret, as if it had aged.
    const [caCert] = pemBlocks(stored.caBundle);
    const aged = createServingCertificate({ ca: { cert: caCert ?? '', key: stored.caKey }, hosts: serviceHostNames(SERVICE, RELEASE_NS), days: 1 });
    const api = loadKubeConfig(kubeconfigFor(cluster.state, 'admin')).makeApiClient(k8s.CoreV1Api);
    await api.patchNamespacedSecret(
      { name: SECRET, namespace: RELEASE_NS, body: { data: { [SECRET_KEYS.cert]: Buffer.from(aged.cert).toString('base64'), [SECRET_KEYS.key]: Buffer.from(aged.key).toString('base64') } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    // Within a check interval the webhook notices, renews (same CA) and serves the new one.
    const yearFromNow = Date.now() + 300 * 24 * 3600 * 1000;
    await waitFor(
      async () => {
        const now = await servedCertificate(webhook?.port ?? 0, stored.caBundle);
        return now.fingerprint256 !== served.fingerprint256 && new Date(now.validTo).getTime() > yearFromNow;
      },
      'a renewed certificate to be served',
      20_000,
    );
    const secret = await getJson(['-n', RELEASE_NS, 'get', 'secret', SECRET]);
    const renewed = new X509Certificate(Buffer.from(secret.data[SECRET_KEYS.cert], 'base64'));
    expect(renewed.fingerprint256).toBe((await servedCertificate(webhook.port, stored.caBundle)).fingerprint256);
    expect(renewed.fingerprint256).not.toBe(new X509Certificate(aged.cert).fingerprint256);
    expect(Buffer.from(secret.data[SECRET_KEYS.caBundle], 'base64').toString()).toBe(stored.caBundle);
  });
  it("helm test's script gets a denial from the webhook through the Service name, trusting the stored CA", async () => {
    // No kubelet runs the test pod here, so its script runs in a node process instead, with
    // the Service's name resolved to the webhook listening on this machine.
    const pod = (await render([], 'edge-registrar')).find((o) => o.kind === 'Pod');
    const script = String(pod?.spec.containers[0].args[0]).replace('.svc/validate', `.svc:${webhook?.port ?? 0}/validate`);
    const caFile = join(dir, 'webhook-ca.crt');
    const secret = await getJson(['-n', RELEASE_NS, 'get', 'secret', SECRET]);
    await writeFile(caFile, Buffer.from(secret.data[SECRET_KEYS.caBundle], 'base64'));
    const resolveSvc = `import dns from 'node:dns'; const lookup = dns.lookup; dns.lookup = (host, options, callback) => host.endsWith('.svc') ? lookup('127.0.0.1', options, callback) : lookup(host, options, callback);`;
    const res = await capture(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(resolveSvc)}`, '--input-type=module', '-e', script], { env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile } });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('address.public-unicast');
  });
});
