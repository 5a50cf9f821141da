/** doctor's judgement on cluster states, without a cluster: one state per check's outcomes. */
import { describe, expect, it } from 'vitest';
import { diagnose, formatChecks, type Check, type ClusterState } from '../../src/doctor/checks.ts';
import type { NetworkPolicyObj } from '../../src/doctor/network-reach.ts';
import { fleetDigest } from '../../src/mesh-telemetry/telemetry-object.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';

const ok = <T>(value: T) => ({ ok: true as const, value });
const registered = [{ vpsId: 'v1', name: 'vps-jp-01', address: '103.21.244.10', country: 'jp' }];

const WEBHOOK_POLICY: NetworkPolicyObj = { metadata: { name: 'edge-registrar' }, spec: { podSelector: { matchLabels: { app: 'edge-registrar-webhook' } }, policyTypes: ['Ingress'], ingress: [{ ports: [{ port: 8443, protocol: 'TCP' }], from: [{ ipBlock: { cidr: '172.18.0.2/32' } }] }, { ports: [{ port: 9090 }] }] } };
const GATEWAY_POLICY: NetworkPolicyObj = { metadata: { name: 'gw' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] } }] }] } };

function healthy(): ClusterState {
  return {
    namespace: 'airport-prod',
    crds: ok({ 'workloadentries.networking.istio.io': ['v1', 'v1beta1'], 'workloadgroups.networking.istio.io': ['v1'], 'serviceentries.networking.istio.io': ['v1'], 'telemetries.telemetry.istio.io': ['v1'] }),
    namespaceObject: ok({ metadata: { name: 'airport-prod', labels: { 'istio-injection': 'enabled' } } }),
    serviceAccount: ok({ metadata: { name: 'xrayr-vm' } }),
    workloadGroups: ok([{ metadata: { name: 'xrayr' }, spec: { metadata: { labels: { app: 'xrayr' } }, template: { serviceAccount: 'xrayr-vm' } } }]),
    serviceEntries: ok([{ metadata: { name: 'xrayr-nodes' }, spec: { workloadSelector: { labels: { app: 'xrayr' } }, resolution: 'STATIC', ports: [{ protocol: 'TLS' }] } }]),
    webhooks: { mutating: ok({ webhooks: [{ name: 'm', failurePolicy: 'Fail', clientConfig: { caBundle: 'Q0E=' } }] }), validating: ok({ webhooks: [{ name: 'v', failurePolicy: 'Fail', clientConfig: { caBundle: 'Q0E=' } }] }) },
    servingCertificate: ok({ caBundle: 'Q0E=', notAfter: new Date('2027-11-22T00:00:00Z') }),
    gatewayPods: ok([{ metadata: { name: 'gw', annotations: { 'proxy.istio.io/config': '{"gatewayTopology":{"proxyProtocol":{},"numTrustedProxies":0}}' } } }]),
    meshConfig: ok({ defaultConfig: { proxyMetadata: { PEER_METADATA_DISCOVERY: 'true' } } }),
    meshNetworks: ok({ networks: { network1: { endpoints: [{ fromCidr: '10.244.0.0/16' }] } } }),
    istiodEnv: ok({ PILOT_ENABLE_AMBIENT: 'true' }),
    telemetry: ok({ metadata: { labels: { 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-count': '1', 'edge-registrar.io/fleet-digest': fleetDigest(registered) } } }),
    webhookNetwork: ok({ service: 'airport-prod/edge-registrar', podLabels: { app: 'edge-registrar-webhook' }, targetPort: { name: 'https', number: 8443 }, policies: [WEBHOOK_POLICY] }),
    gatewayPolicies: ok([GATEWAY_POLICY]),
    podAddresses: ok([{ pod: 'airport-prod/xboard-0', ip: '10.244.1.7' }, { pod: 'istio-system/istio-ingressgateway-1', ip: '10.244.2.3' }]),
    managedEntries: ok([{ name: 'vps-jp-01', address: '103.21.244.10', vpsId: 'v1' }]),
    redis: ok({ groupExists: true, lag: 0, pending: 0, deadLetters: 0, registered }),
  };
}

const INVOCATION = { kubectl: 'kubectl', edgeRegistrar: (subcommand: string) => `edge-registrar ${subcommand} --redis-url redis://r:6379` };
const EXPECT = { policy: DEFAULT_POLICY, invocation: INVOCATION, webhookName: 'edge-registrar', telemetry: { namespace: 'istio-system', name: 'edge-registrar-vps' }, now: new Date('2026-11-22T00:00:00Z') };
const byId = (checks: Check[]) => Object.fromEntries(checks.map((c) => [c.id, c]));

describe('diagnose', () => {
  it('passes every check of a healthy setup', () => {
    expect(diagnose(healthy(), EXPECT).filter((c) => c.status !== 'pass')).toEqual([]);
  });

  it.each<[string, (s: ClusterState) => void, string, 'fail' | 'warn', RegExp]>([
    ['a CRD not installed', (s) => { s.crds = ok({ 'workloadentries.networking.istio.io': ['v1'] }); }, 'istio.crds', 'fail', /missing: workloadgroups/],
    ['an Istio too old for v1', (s) => { s.crds = ok({ 'workloadentries.networking.istio.io': ['v1beta1'], 'workloadgroups.networking.istio.io': ['v1'], 'serviceentries.networking.istio.io': ['v1'], 'telemetries.telemetry.istio.io': ['v1'] }); }, 'istio.crds', 'fail', /not serving v1: workloadentries/],
    ['the namespace missing', (s) => { s.namespaceObject = ok(undefined); }, 'namespace.injection', 'fail', /does not exist/],
    ['a WorkloadGroup running as another account', (s) => { s.workloadGroups = ok([{ metadata: { name: 'xrayr' }, spec: { metadata: { labels: { app: 'xrayr' } }, template: { serviceAccount: 'default' } } }]); }, 'mesh.workload-group', 'fail', /runs as "default"/],
    ['no ServiceEntry selecting the entries', (s) => { s.serviceEntries = ok([]); }, 'mesh.service-entry', 'fail', /no ServiceEntry .* workloadSelector app=xrayr/],
    ['a ServiceEntry resolved by DNS', (s) => { s.serviceEntries = ok([{ metadata: { name: 'x' }, spec: { workloadSelector: { labels: { app: 'xrayr' } }, resolution: 'DNS', ports: [{ protocol: 'TLS' }] } }]); }, 'mesh.service-entry', 'fail', /resolution "DNS"/],
    ['a webhook configuration missing', (s) => { s.webhooks.mutating = ok(undefined); }, 'webhook.mutating', 'fail', /nothing guards the entries/],
    ['a caBundle the certificate does not chain to', (s) => { s.servingCertificate = ok({ caBundle: 'T0xE', notAfter: new Date('2027-11-22T00:00:00Z') }); }, 'webhook.certificate', 'fail', /2 webhook\(s\) carry a caBundle other than/],
    ['a serving certificate about to expire', (s) => { s.servingCertificate = ok({ caBundle: 'Q0E=', notAfter: new Date('2026-11-29T00:00:00Z') }); }, 'webhook.certificate', 'fail', /expires in 7.0 days/],
    ['no gateway pod matching the selector', (s) => { s.gatewayPods = ok([]); }, 'gateway.client-address', 'fail', /no gateway pod matches/],
    ['a gateway without the PROXY protocol (mesh default)', (s) => { s.gatewayPods = ok([{ metadata: { name: 'gw' } }]); }, 'gateway.client-address', 'fail', /gw: proxyProtocol off, numTrustedProxies 0 \(meshConfig.defaultConfig\)/],
    ['a VPS inside a meshNetworks fromCidr range', (s) => { s.meshNetworks = ok({ networks: { n: { endpoints: [{ fromCidr: '103.21.244.0/24' }] } } }); }, 'gateway.internal-addresses', 'fail', /vps-jp-01 \(103.21.244.10 in 103.21.244.0\/24\)/],
    ['a Telemetry someone else owns', (s) => { s.telemetry = ok({ metadata: { labels: {} } }); }, 'telemetry.in-step', 'fail', /not managed by edge-registrar/],
    ['a Telemetry that leaves out the newest registrations (the fleet over its limit)', (s) => { s.telemetry = ok({ metadata: { labels: { 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-count': '0', 'edge-registrar.io/fleet-digest': 'x', 'edge-registrar.io/unmapped-vps': '1' } } }); }, 'telemetry.in-step', 'fail', /maps 0 of the 1 registered VPSs: the whole fleet would pass a limit, so the 1 newest registrations are left out/],
    ['a Telemetry behind the fleet', (s) => { s.telemetry = ok({ metadata: { labels: { 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-count': '0', 'edge-registrar.io/fleet-digest': 'x' } } }); }, 'telemetry.in-step', 'fail', /maps 0 VPSs, not the 1 registered/],
    ['istiod without its ambient index', (s) => { s.istiodEnv = ok({}); }, 'attribution.direct', 'warn', /without istiod PILOT_ENABLE_AMBIENT=true/],
    ['no consumer group', (s) => { s.redis = ok({ groupExists: false, lag: null, pending: 0, deadLetters: 0, registered }); }, 'redis.stream', 'fail', /consumer group does not exist/],
    ['dead letters waiting', (s) => { s.redis = ok({ groupExists: true, lag: 0, pending: 0, deadLetters: 3, registered }); }, 'redis.stream', 'warn', /3 dead letters/],
    ['an entry without a registered VPS', (s) => { s.managedEntries = ok([{ name: 'vps-jp-01', address: '103.21.244.10', vpsId: 'v1' }, { name: 'vps-jp-02', address: '103.21.244.11', vpsId: 'v2' }]); }, 'fleet.entries', 'fail', /entries without a registered VPS: vps-jp-02/],
    ['a webhook port open to every pod (no NetworkPolicy)', (s) => { s.webhookNetwork = ok({ service: 'airport-prod/edge-registrar', podLabels: { app: 'edge-registrar-webhook' }, targetPort: { name: 'https', number: 8443 }, policies: [] }); }, 'webhook.network', 'fail', /port 8443 is open to any source \(no NetworkPolicy isolates it\)/],
    ['a webhook policy that admits every source on its port', (s) => { s.webhookNetwork = ok({ service: 'airport-prod/edge-registrar', podLabels: { app: 'edge-registrar-webhook' }, targetPort: { name: 'https', number: 8443 }, policies: [{ spec: { podSelector: {}, ingress: [{ ports: [{ port: 8443 }] }] } }] }); }, 'webhook.network', 'fail', /port 8443/],
    ['a webhook block that holds pod addresses (EKS: the VPC CIDR)', (s) => { s.webhookNetwork = ok({ service: 'airport-prod/edge-registrar', podLabels: { app: 'edge-registrar-webhook' }, targetPort: { name: 'https', number: 8443 }, policies: [{ spec: { podSelector: {}, ingress: [{ ports: [{ port: 'https' }], from: [{ ipBlock: { cidr: '10.0.0.0/8' } }] }] } }] }); }, 'webhook.network', 'warn', /admits 10.0.0.0\/8, which holds the addresses of 2 pod\(s\): airport-prod\/xboard-0, istio-system/],
    ['a gateway policy with a rule for every source on a listener', (s) => { s.gatewayPolicies = ok([{ metadata: { name: 'gw' }, spec: { podSelector: {}, ingress: [{ ports: [{ port: 8443 }] }] } }]); }, 'gateway.proxy-listener', 'warn', /gw \(NetworkPolicy gw has a rule with no from\)/],
    ['a gateway block that does not except the pod network', (s) => { s.gatewayPolicies = ok([{ metadata: { name: 'gw' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' } }] }] } }]); }, 'gateway.proxy-listener', 'warn', /its address blocks hold airport-prod\/xboard-0, istio-system\/istio-ingressgateway-1/],
    ['a webhook policy that admits 0.0.0.0/0', (s) => { s.webhookNetwork = ok({ service: 'airport-prod/edge-registrar', podLabels: { app: 'edge-registrar-webhook' }, targetPort: { name: 'https', number: 8443 }, policies: [{ metadata: { name: 'wide' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0' } }] }] } }] }); }, 'webhook.network', 'fail', /open to any source \(NetworkPolicy wide admits 0.0.0.0\/0\)/],
    ['a gateway any pod can reach', (s) => { s.gatewayPolicies = ok([]); }, 'gateway.proxy-listener', 'warn', /pods can open connections to gw \(no NetworkPolicy isolates it\) and send a PROXY-protocol header/],
    ['a part that could not be read', (s) => { s.serviceAccount = { ok: false, error: 'HTTP 403: forbidden' }; }, 'mesh.service-account', 'fail', /could not read it: HTTP 403/],
  ])('%s: %s is %s', (_name, breakIt, id, status, detail) => {
    const state = healthy();
    breakIt(state);
    const checks = diagnose(state, EXPECT);
    expect(checks.filter((c) => c.status !== 'pass').map((c) => c.id)).toEqual([id]);
    expect(byId(checks)[id]).toMatchObject({ status, detail: expect.stringMatching(detail) as string, fix: expect.any(String) as string });
  });

  it("says whether Kiali draws each VPS: the Telemetry's source identity overrides", () => {
    const state = healthy();
    expect(byId(diagnose(state, EXPECT))['telemetry.in-step']?.detail).not.toMatch(/source identity/);
    const telemetry = state.telemetry as { ok: true; value: { spec?: unknown } };
    telemetry.value.spec = { metrics: [{ overrides: [{ tagOverrides: { vps: { value: "'x'" }, source_workload: { value: "'x'" } } }] }] };
    expect(byId(diagnose(state, EXPECT))['telemetry.in-step']).toMatchObject({ status: 'pass', detail: expect.stringMatching(/source identity on: Kiali draws each VPS → xboard$/) as string });
  });

  it('skips what it was not asked to look at', () => {
    const state = healthy();
    delete state.redis;
    delete state.telemetry;
    delete state.servingCertificate;
    const checks = byId(diagnose(state, { ...EXPECT, telemetry: undefined }));
    expect(Object.values(checks).filter((c) => c.status === 'skip').map((c) => c.id).sort()).toEqual(['fleet.entries', 'gateway.client-address', 'gateway.internal-addresses', 'redis.stream', 'telemetry.in-step', 'webhook.certificate']);
  });

  it('formats a checklist with the fix under each failure and a summary', () => {
    const state = healthy();
    state.namespaceObject = ok({ metadata: { labels: {} } });
    const text = formatChecks(diagnose(state, EXPECT));
    expect(text).toContain('✗ sidecar injection is on in airport-prod');
    expect(text).toContain("    fix: label it (or istio.io/rev=<revision> for a revisioned install), then restart Xboard's pods so they get their sidecars");
    expect(text).toContain('    run: kubectl label namespace airport-prod istio-injection=enabled');
    expect(text.trim().split('\n').at(-1)).toBe('15 passed, 1 failed, 0 warnings, 0 skipped');
  });

  it('prints commands with what doctor was given to reach the cluster and Redis, so they run as printed', () => {
    const state = healthy();
    state.redis = ok({ groupExists: true, lag: 0, pending: 0, deadLetters: 2, registered });
    state.serviceAccount = ok(undefined);
    const checks = byId(diagnose(state, { ...EXPECT, invocation: { kubectl: 'kubectl --kubeconfig /k', edgeRegistrar: (sub: string) => `edge-registrar ${sub} --redis-url redis://r:6379` } }));
    expect(checks['redis.stream']?.run).toBe('edge-registrar dlq list --redis-url redis://r:6379');
    expect(checks['mesh.service-account']?.run).toBe('kubectl --kubeconfig /k -n airport-prod create serviceaccount xrayr-vm');
  });
});
