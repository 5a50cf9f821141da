/**
 * `edge-registrar doctor` against the real API server and redis-server: a setup that meets
 * every check passes (exit 0), and each deliberately broken setup fails exactly its check,
 * with the fix, and exit 1.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Check } from '../../src/doctor/checks.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { capture } from '../harness/capture.ts';
import { shellWords } from '../harness/doc-snippets.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { publishRegister, settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { render } from './helm-support.ts';
import { NAMESPACE, kubectl, mustKubectl, waitFor } from './support.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const GATEWAY_POD = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'istio-ingressgateway-7f9c', namespace: 'istio-system', labels: { istio: 'ingressgateway' }, annotations: { 'proxy.istio.io/config': JSON.stringify({ gatewayTopology: { proxyProtocol: {}, numTrustedProxies: 0 } }) } },
  spec: { containers: [{ name: 'istio-proxy', image: 'istio/proxyv2' }] },
};
const ISTIOD = {
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name: 'istiod', namespace: 'istio-system' },
  spec: { replicas: 0, selector: { matchLabels: { app: 'istiod' } }, template: { metadata: { labels: { app: 'istiod' } }, spec: { containers: [{ name: 'discovery', image: 'istio/pilot', env: [{ name: 'PILOT_ENABLE_AMBIENT', value: 'true' }] }] } } },
};
const MESH = {
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name: 'istio', namespace: 'istio-system' },
  data: { mesh: 'defaultConfig:\n  proxyMetadata:\n    PEER_METADATA_DISCOVERY: "true"\n' },
};

// A pod of the application's, at an address of the pod network (10.244.0.0/16 here), as a kubelet would report it.
const APP_POD = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'xboard-0', namespace: NAMESPACE }, spec: { containers: [{ name: 'xboard', image: 'xboard' }] } };
const APP_POD_STATUS = { status: { phase: 'Running', podIP: '10.244.1.7', podIPs: [{ ip: '10.244.1.7' }] } };

/** The chart's opt-in NetworkPolicy on the gateway, rendered with `set` and applied. */
async function applyGatewayPolicy(set: string[]): Promise<void> {
  const objects = await render(['perVpsMetrics.enabled=true', 'perVpsMetrics.gatewayNetworkPolicy.enabled=true', 'perVpsMetrics.gatewayNetworkPolicy.podCIDRs={10.244.0.0/16}', ...set]);
  const policy = objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === 'istio-system');
  await mustKubectl('admin', ['apply', '-f', '-'], policy);
}

let bed: SyncTestBed | undefined;
let sync: RunningSync | undefined;

async function doctor(): Promise<{ code: number; checks: Record<string, Check> }> {
  const res = await capture(process.execPath, [join(ROOT, 'src/cli.ts'), 'doctor', '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin'), '--redis-url', bed!.redisServer.url, '--telemetry', '--output', 'json']);
  if (res.code !== 0 && res.code !== 1) throw new Error(`doctor failed (${res.code}): ${res.stderr}`);
  const parsed = JSON.parse(res.stdout) as { checks: Check[] };
  return { code: res.code, checks: Object.fromEntries(parsed.checks.map((c) => [c.id, c])) };
}

/**
 * A command doctor printed, run as a user would run it: `kubectl` is the suite's kubectl and
 * `edge-registrar` the package's executable (src/cli.ts, what its bin and the image run).
 */
function runAsPrinted(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...args] = shellWords(command);
  if (program === 'kubectl') return capture(inject('binaries').kubectl, args);
  if (program === 'edge-registrar') return capture(process.execPath, [join(ROOT, 'src/cli.ts'), ...args]);
  throw new Error(`doctor printed a command this test cannot run: ${command}`);
}

const failing = (checks: Record<string, Check>): string[] => Object.values(checks).filter((c) => c.status === 'fail').map((c) => c.id);

beforeAll(async () => {
  bed = await startSyncTestBed('doctor');
  const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url);
  sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, coalesceMs: 300 } });
  await publishRegister(bed.redis, 'vps-8101', 'vps-jp-81', '103.21.244.81', 'jp');
  await publishRegister(bed.redis, 'vps-8102', 'vps-sg-82', '2400:cb00:2049::82', 'sg');
  await settled(bed.redis);
  await mustKubectl('admin', ['label', 'namespace', NAMESPACE, 'istio-injection=enabled', '--overwrite']);
  await mustKubectl('admin', ['apply', '-f', '-'], { apiVersion: 'v1', kind: 'List', items: [GATEWAY_POD, ISTIOD, MESH, APP_POD] });
  await mustKubectl('admin', ['-n', NAMESPACE, 'patch', 'pod', APP_POD.metadata.name, '--subresource=status', '--type=merge', '-p', JSON.stringify(APP_POD_STATUS)]);
  await applyGatewayPolicy([]);
  await waitFor(async () => (await kubectl('admin', ['-n', 'istio-system', 'get', 'telemetry', 'edge-registrar-vps', '-o', "jsonpath={.metadata.annotations['edge-registrar\\.io/vps-count']}"])).stdout === '2', 'the Telemetry to map both VPSs');
});

afterAll(async () => {
  await sync?.stop();
  await kubectl('admin', ['label', 'namespace', NAMESPACE, 'istio-injection-']);
  await kubectl('admin', ['-n', 'istio-system', 'delete', 'pod/istio-ingressgateway-7f9c', 'deployment/istiod', 'configmap/istio', 'telemetry/edge-registrar-vps', 'networkpolicy/edge-registrar-gateway-proxy-protocol', '--ignore-not-found', '--wait=false']);
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'pod', APP_POD.metadata.name, '--ignore-not-found', '--wait=false']);
  if (bed !== undefined) await stopSyncTestBed(bed);
});

describe('edge-registrar doctor', () => {
  it('passes a setup that meets every check, and exits 0', async () => {
    const { code, checks } = await doctor();
    expect(failing(checks)).toEqual([]);
    expect(Object.values(checks).filter((c) => c.status === 'warn').map((c) => c.id)).toEqual([]);
    expect(checks['telemetry.in-step']?.detail).toBe('Telemetry istio-system/edge-registrar-vps maps all 2 registered VPSs');
    expect(checks['fleet.entries']?.detail).toBe('2 VPSs, 2 managed entries');
    expect(checks['webhook.certificate']?.status).toBe('skip');
    expect(code).toBe(0);
  });

  // Each case breaks one thing, expects exactly its check to fail (with a fix), and repairs it.
  // `repair: 'printed'`: the command doctor printed (`run`) is the repair, run exactly as printed.
  const broken: { name: string; check: string; detail: RegExp; fix: RegExp; breakIt: () => Promise<unknown>; repair: (() => Promise<unknown>) | 'printed' }[] = [
    {
      name: 'sidecar injection off in the namespace',
      check: 'namespace.injection',
      detail: /neither istio-injection=enabled nor istio.io\/rev/,
      fix: /restart Xboard's pods/,
      breakIt: () => mustKubectl('admin', ['label', 'namespace', NAMESPACE, 'istio-injection-']),
      repair: 'printed',
    },
    {
      name: "a TCP ServiceEntry",
      check: 'mesh.service-entry',
      detail: /TCP port and no addresses.*IST0134/,
      fix: /protocol TLS/,
      breakIt: () => mustKubectl('admin', ['-n', NAMESPACE, 'patch', 'serviceentry', 'xrayr-nodes', '--type', 'merge', '-p', JSON.stringify({ spec: { ports: [{ number: 443, name: 'https', protocol: 'TCP' }] } })]),
      repair: () => mustKubectl('admin', ['-n', NAMESPACE, 'patch', 'serviceentry', 'xrayr-nodes', '--type', 'merge', '-p', JSON.stringify({ spec: { ports: [{ number: 443, name: 'tls', protocol: 'TLS' }] } })]),
    },
    {
      name: 'the ServiceAccount missing',
      check: 'mesh.service-account',
      detail: /does not exist: the webhook refuses every entry/,
      fix: /istioResources.create/,
      breakIt: () => mustKubectl('admin', ['-n', NAMESPACE, 'delete', 'serviceaccount', 'xrayr-vm']),
      repair: 'printed',
    },
    {
      name: 'the validating webhook failing open',
      check: 'webhook.validating',
      detail: /failurePolicy .*=Ignore/,
      fix: /failurePolicy: Fail/,
      breakIt: () => mustKubectl('admin', ['patch', 'validatingwebhookconfiguration', 'edge-registrar', '--type', 'json', '-p', JSON.stringify([{ op: 'replace', path: '/webhooks/0/failurePolicy', value: 'Ignore' }])]),
      repair: () => mustKubectl('admin', ['patch', 'validatingwebhookconfiguration', 'edge-registrar', '--type', 'json', '-p', JSON.stringify([{ op: 'replace', path: '/webhooks/0/failurePolicy', value: 'Fail' }])]),
    },
    {
      name: 'a gateway that trusts an X-Forwarded-For hop',
      check: 'gateway.client-address',
      detail: /numTrustedProxies 1 \(pod annotation\)/,
      fix: /numTrustedProxies: 0/,
      breakIt: () => mustKubectl('admin', ['-n', 'istio-system', 'annotate', 'pod', GATEWAY_POD.metadata.name, '--overwrite', `proxy.istio.io/config=${JSON.stringify({ gatewayTopology: { proxyProtocol: {}, numTrustedProxies: 1 } })}`]),
      repair: () => mustKubectl('admin', ['-n', 'istio-system', 'annotate', 'pod', GATEWAY_POD.metadata.name, '--overwrite', `proxy.istio.io/config=${GATEWAY_POD.metadata.annotations['proxy.istio.io/config']}`]),
    },
    {
      name: 'a managed entry deleted behind the daemon',
      check: 'fleet.entries',
      detail: /registered without an entry: vps-sg-82 \(vps-8102\)/,
      fix: /resync repairs both/,
      breakIt: async () => {
        await sync!.stop();
        sync = undefined;
        await mustKubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-sg-82']);
      },
      repair: async () => {
        const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed!.redisServer.url);
        sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, coalesceMs: 300 } });
        await waitFor(async () => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-sg-82'])).code === 0, 'resync to restore the entry', 30_000);
      },
    },
    {
      name: 'the Telemetry deleted behind the daemon',
      check: 'telemetry.in-step',
      detail: /Telemetry istio-system\/edge-registrar-vps does not exist/,
      fix: /--telemetry/,
      breakIt: async () => {
        await sync!.stop();
        sync = undefined;
        await mustKubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', 'edge-registrar-vps']);
      },
      repair: async () => {
        const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed!.redisServer.url);
        sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, coalesceMs: 300 } });
        await waitFor(async () => (await kubectl('admin', ['-n', 'istio-system', 'get', 'telemetry', 'edge-registrar-vps'])).code === 0, 'the daemon to write the Telemetry again', 30_000);
      },
    },
  ];

  it.each(broken)('fails on $name: $check, with its fix, exit 1', async ({ check, detail, fix, breakIt, repair }) => {
    await breakIt();
    let printed: string | undefined;
    try {
      // The API server's caches (the webhook configuration's informer) settle within a moment.
      let result = await doctor();
      const deadline = Date.now() + 10_000;
      while (!failing(result.checks).includes(check) && Date.now() < deadline) result = await doctor();
      expect(failing(result.checks)).toEqual([check]);
      expect(result.checks[check]?.detail).toMatch(detail);
      expect(result.checks[check]?.fix).toMatch(fix);
      expect(result.code).toBe(1);
      printed = result.checks[check]?.run;
    } finally {
      if (repair !== 'printed') await repair();
      else {
        const ran = await runAsPrinted(printed ?? 'no command printed');
        expect(ran.code, `${printed ?? ''}: ${ran.stderr}`).toBe(0);
      }
    }
    const after = await doctor();
    expect(failing(after.checks)).toEqual([]);
  });

  it('dead letters waiting: a warning whose printed command lists them, run as printed', async () => {
    await bed!.redis.xadd('sigma:vps-events', '*', 'event', 'register', 'vps_id', 'vps-8199');
    await settled(bed!.redis);
    try {
      const { checks } = await doctor();
      expect(checks['redis.stream']).toMatchObject({ status: 'warn', detail: '1 dead letters', run: `edge-registrar dlq list --redis-url ${bed!.redisServer.url}` });
      const listed = await runAsPrinted(checks['redis.stream']?.run ?? '');
      expect([listed.code, listed.stdout]).toEqual([0, expect.stringMatching(/event.schema\s+register vps_id=vps-8199/)]);
    } finally {
      await bed!.redis.del('{sigma:vps-events}:dlq');
    }
  });

  // The chart's gateway policy keeps the pod network off the PROXY-protocol listeners: pass.
  // Without it, or with a source block that holds a pod's address, the pod could name any VPS.
  it("warns while a pod can reach the gateway's PROXY-protocol listener, naming how; the chart's policy passes", async () => {
    expect((await doctor()).checks['gateway.proxy-listener']).toMatchObject({ status: 'pass' });
    try {
      await applyGatewayPolicy(['perVpsMetrics.gatewayNetworkPolicy.sourceCIDRs={10.0.0.0/8}']);
      expect((await doctor()).checks['gateway.proxy-listener']).toMatchObject({ status: 'warn', detail: expect.stringContaining(`istio-ingressgateway-7f9c (its address blocks hold ${NAMESPACE}/xboard-0)`) });
      await mustKubectl('admin', ['-n', 'istio-system', 'delete', 'networkpolicy', 'edge-registrar-gateway-proxy-protocol']);
      const { code, checks } = await doctor();
      expect(checks['gateway.proxy-listener']).toMatchObject({ status: 'warn', detail: expect.stringContaining('istio-ingressgateway-7f9c (no NetworkPolicy isolates it)'), fix: expect.stringContaining('perVpsMetrics.gatewayNetworkPolicy') });
      expect(code).toBe(0);
    } finally {
      await applyGatewayPolicy([]);
    }
  });

  it('prints a checklist a person reads: marks, details, fixes and a summary', async () => {
    await mustKubectl('admin', ['label', 'namespace', NAMESPACE, 'istio-injection-']);
    try {
      const res = await capture(process.execPath, [join(ROOT, 'src/cli.ts'), 'doctor', '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin')]);
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('✗ sidecar injection is on in airport-prod');
      expect(res.stdout).toContain(`    run: kubectl --kubeconfig ${kubeconfigFor(inject('cluster'), 'admin')} label namespace airport-prod istio-injection=enabled`);
      expect(res.stdout).toContain("✓ Istio's CRDs are installed and serve v1");
      expect(res.stdout).toMatch(/- the event stream is consumed.*\n\s+no --redis-url given/);
      expect(res.stdout).toMatch(/\d+ passed, 1 failed, \d+ warnings, \d+ skipped/);
    } finally {
      await mustKubectl('admin', ['label', 'namespace', NAMESPACE, 'istio-injection=enabled']);
    }
  });
});
