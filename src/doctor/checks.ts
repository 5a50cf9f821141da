/**
 * `edge-registrar doctor`'s judgement: what stands between a cluster and the project's goal (every
 * VPS an entry, every entry seen per VPS), as a checklist with the fix for each failure. Pure:
 * it reads a ClusterState that gather.ts fetched (each part either a value or the error that
 * kept it from being read) and returns the checks, in the order an operator fixes them.
 */
import { cidrContains, parseAddress } from '../policy/address.ts';
import type { Policy } from '../policy/policy-file.ts';
import { everyAddressBlock, ingressReach, podsInBlocks, type NetworkPolicyObj, type PodAddress, type Reach } from './network-reach.ts';
import { FLEET_DIGEST_ANNOTATION, UNMAPPED_ANNOTATION, VPS_COUNT_ANNOTATION, fleetDigest, isManagedTelemetry, type StoredTelemetry } from '../mesh-telemetry/telemetry-object.ts';

export type Status = 'pass' | 'fail' | 'warn' | 'skip';

export interface Check {
  id: string;
  title: string;
  status: Status;
  detail: string;
  /** What to do about a failure or warning, in words. */
  fix?: string;
  /** A command that does it (or shows what to do), runnable as printed. */
  run?: string;
}

/** A part of the cluster's state: what was read, or why it could not be. */
export type Read<T> = { ok: true; value: T } | { ok: false; error: string };

/** What doctor reads of the specs it looks at (WorkloadGroup, ServiceEntry, WorkloadEntry). */
export interface SeedSpec {
  metadata?: { labels?: Record<string, string> };
  template?: { serviceAccount?: string };
  workloadSelector?: { labels?: Record<string, string> };
  addresses?: string[];
  ports?: { protocol?: string }[];
  resolution?: string;
  address?: string;
}

export interface Obj {
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: SeedSpec;
  data?: Record<string, string>;
}

interface GatewayTopology {
  proxyProtocol?: unknown;
  numTrustedProxies?: number;
}

/** The parts of Istio's mesh config (ConfigMap istio, key mesh) doctor reads. */
export interface MeshConfig {
  defaultConfig?: { gatewayTopology?: GatewayTopology; proxyMetadata?: Record<string, string> };
}

/** The parts of Istio's mesh networks (ConfigMap istio, key meshNetworks) doctor reads. */
export interface MeshNetworks {
  networks?: Record<string, { endpoints?: { fromCidr?: string }[] } | null>;
}

export interface WebhookConfiguration {
  metadata?: { name?: string };
  webhooks?: { name?: string; failurePolicy?: string; clientConfig?: { caBundle?: string; service?: { name: string; namespace: string; port?: number } } }[];
}

export interface PodPort {
  number?: number;
  name?: string;
}

/** The webhook's Service as the webhook configuration names it: the labels it selects pods by and the port it sends to, with the NetworkPolicies of its namespace. */
export interface WebhookNetwork {
  service: string;
  /** The labels of the pods it sends to (their pod template's, or the Service's selector). */
  podLabels: Record<string, string>;
  /** The pod port the Service forwards to, by number and by name where either is known. */
  targetPort: PodPort;
  policies: NetworkPolicyObj[];
}

export interface RegisteredVps {
  vpsId: string;
  name: string;
  address: string;
  country: string;
}

export interface ClusterState {
  namespace: string;
  /** CRD name → versions served (missing CRD: absent). */
  crds: Read<Record<string, string[]>>;
  namespaceObject: Read<Obj | undefined>;
  serviceAccount: Read<Obj | undefined>;
  workloadGroups: Read<Obj[]>;
  serviceEntries: Read<Obj[]>;
  webhooks: { mutating: Read<WebhookConfiguration | undefined>; validating: Read<WebhookConfiguration | undefined> };
  /** The CA the webhook's certificate chains to and the certificate's expiry, when its Secret was given. */
  servingCertificate?: Read<{ caBundle: string; notAfter: Date } | undefined>;
  gatewayPods: Read<Obj[]>;
  meshConfig: Read<MeshConfig | undefined>;
  meshNetworks: Read<MeshNetworks | undefined>;
  istiodEnv: Read<Record<string, string> | undefined>;
  telemetry?: Read<StoredTelemetry | undefined>;
  /** undefined: the webhook configurations call a URL, not a Service, or do not exist. */
  webhookNetwork?: Read<WebhookNetwork | undefined>;
  /** The NetworkPolicies of the gateway's namespace, when per-VPS metrics are on. */
  gatewayPolicies?: Read<NetworkPolicyObj[]>;
  /** The addresses of the cluster's running pods (host-network pods left out). */
  podAddresses?: Read<PodAddress[]>;
  managedEntries: Read<{ name: string; address: string; vpsId: string }[]>;
  redis?: Read<{ groupExists: boolean; lag: number | null; pending: number; deadLetters: number; registered: RegisteredVps[] }>;
}

/** How the user reaches the cluster and Redis, so that a command doctor prints runs as printed. */
export interface Invocation {
  /** `kubectl`, with the --kubeconfig doctor was given. */
  kubectl: string;
  /** `edge-registrar`, and the Redis flags doctor was given (no password), to append after a subcommand. */
  edgeRegistrar: (subcommand: string) => string;
}

export interface Expectations {
  policy: Policy;
  invocation: Invocation;
  webhookName: string;
  /** The managed Telemetry, when per-VPS metrics are on. */
  telemetry?: { namespace: string; name: string };
  now: Date;
}

const WORKLOAD_CRDS = ['workloadentries.networking.istio.io', 'workloadgroups.networking.istio.io', 'serviceentries.networking.istio.io'];
const TELEMETRY_CRD = 'telemetries.telemetry.istio.io';

function unread(id: string, title: string, error: string): Check {
  return { id, title, status: 'fail', detail: `could not read it: ${error}`, fix: 'give doctor a kubeconfig that may read it (or check the API server)' };
}

function crdChecks(state: ClusterState, expect: Expectations): Check[] {
  const title = "Istio's CRDs are installed and serve v1";
  if (!state.crds.ok) return [unread('istio.crds', title, state.crds.error)];
  const served = state.crds.value;
  const wanted = [...WORKLOAD_CRDS, ...(expect.telemetry ? [TELEMETRY_CRD] : [])];
  const versions = (crd: string): string[] | undefined => served[crd];
  const missing = wanted.filter((c) => versions(c) === undefined);
  const notV1 = wanted.filter((c) => versions(c) !== undefined && !(versions(c) ?? []).includes('v1'));
  const shown = (crds: string[]): string => crds.map((c) => `${c} (${(versions(c) ?? []).join(', ')})`).join('; ');
  if (missing.length > 0) return [{ id: 'istio.crds', title, status: 'fail', detail: `missing: ${missing.join(', ')}`, fix: 'install Istio (istioctl install, or the base chart) in this cluster' }];
  if (notV1.length > 0) return [{ id: 'istio.crds', title, status: 'fail', detail: `not serving v1: ${shown(notV1)}`, fix: 'upgrade Istio to 1.22 or later (v1 APIs), or run edge-registrar with --istio-api-version v1beta1' }];
  return [{ id: 'istio.crds', title, status: 'pass', detail: shown(wanted) }];
}

function injectionCheck(state: ClusterState, expect: Expectations): Check {
  const id = 'namespace.injection';
  const title = `sidecar injection is on in ${state.namespace} (Xboard's sidecar reports what it receives)`;
  if (!state.namespaceObject.ok) return unread(id, title, state.namespaceObject.error);
  const labels = state.namespaceObject.value?.metadata?.labels ?? {};
  const { kubectl } = expect.invocation;
  if (state.namespaceObject.value === undefined) return { id, title, status: 'fail', detail: `namespace ${state.namespace} does not exist`, fix: 'create it, then label it for sidecar injection', run: `${kubectl} create namespace ${state.namespace}` };
  if (labels['istio-injection'] === 'enabled' || labels['istio.io/rev'] !== undefined) return { id, title, status: 'pass', detail: labels['istio.io/rev'] !== undefined ? `istio.io/rev=${labels['istio.io/rev']}` : 'istio-injection=enabled' };
  return { id, title, status: 'fail', detail: `namespace ${state.namespace} has neither istio-injection=enabled nor istio.io/rev`, fix: "label it (or istio.io/rev=<revision> for a revisioned install), then restart Xboard's pods so they get their sidecars", run: `${kubectl} label namespace ${state.namespace} istio-injection=enabled` };
}

function meshObjectChecks(state: ClusterState, expect: Expectations): Check[] {
  const { policy } = expect;
  const ns = state.namespace;
  const checks: Check[] = [];
  const saTitle = `ServiceAccount ${ns}/${policy.serviceAccount} exists (every entry runs as it)`;
  if (!state.serviceAccount.ok) checks.push(unread('mesh.service-account', saTitle, state.serviceAccount.error));
  else if (state.serviceAccount.value === undefined) checks.push({ id: 'mesh.service-account', title: saTitle, status: 'fail', detail: 'it does not exist: the webhook refuses every entry (serviceAccount.exists)', fix: "create it (the chart's istioResources.create does)", run: `${expect.invocation.kubectl} -n ${ns} create serviceaccount ${policy.serviceAccount}` });
  else checks.push({ id: 'mesh.service-account', title: saTitle, status: 'pass', detail: 'present' });

  const wgTitle = `a WorkloadGroup for app ${policy.app} runs as ${policy.serviceAccount}`;
  if (!state.workloadGroups.ok) checks.push(unread('mesh.workload-group', wgTitle, state.workloadGroups.error));
  else {
    const group = state.workloadGroups.value.find((g) => g.spec?.metadata?.labels?.app === policy.app);
    if (group === undefined) checks.push({ id: 'mesh.workload-group', title: wgTitle, status: 'warn', detail: `no WorkloadGroup in ${ns} labels its workloads app=${policy.app}`, fix: "install the chart with istioResources.create=true (its WorkloadGroup xrayr)" });
    else if (group.spec?.template?.serviceAccount !== policy.serviceAccount) checks.push({ id: 'mesh.workload-group', title: wgTitle, status: 'fail', detail: `WorkloadGroup ${group.metadata?.name ?? '?'} runs as ${JSON.stringify(group.spec?.template?.serviceAccount ?? null)}`, fix: `set its spec.template.serviceAccount to ${policy.serviceAccount}` });
    else checks.push({ id: 'mesh.workload-group', title: wgTitle, status: 'pass', detail: `WorkloadGroup ${group.metadata?.name ?? '?'}` });
  }

  const seTitle = `a ServiceEntry selects the entries (app=${policy.app}), resolution STATIC, and captures only its own traffic`;
  if (!state.serviceEntries.ok) checks.push(unread('mesh.service-entry', seTitle, state.serviceEntries.error));
  else {
    const entry = state.serviceEntries.value.find((s) => s.spec?.workloadSelector?.labels?.app === policy.app);
    if (entry === undefined) checks.push({ id: 'mesh.service-entry', title: seTitle, status: 'fail', detail: `no ServiceEntry in ${ns} has workloadSelector app=${policy.app}: the entries are no service's endpoints`, fix: "install the chart with istioResources.create=true (its ServiceEntry xrayr-nodes)" });
    else {
      const name = entry.metadata?.name ?? '?';
      const tcpWithoutAddress = (entry.spec?.addresses ?? []).length === 0 && (entry.spec?.ports ?? []).some((p) => p.protocol === undefined || p.protocol.toUpperCase() === 'TCP');
      if (entry.spec?.resolution !== 'STATIC') checks.push({ id: 'mesh.service-entry', title: seTitle, status: 'fail', detail: `ServiceEntry ${name} has resolution ${JSON.stringify(entry.spec?.resolution ?? null)}`, fix: 'set spec.resolution: STATIC (the entries are its endpoints)' });
      else if (tcpWithoutAddress) checks.push({ id: 'mesh.service-entry', title: seTitle, status: 'fail', detail: `ServiceEntry ${name} has a TCP port and no addresses: every sidecar it is exported to sends all outbound traffic on that port to the VPSs (istioctl analyze: IST0134)`, fix: 'use protocol TLS (matched by SNI) as the chart does, and exportTo: ["."]' });
      else checks.push({ id: 'mesh.service-entry', title: seTitle, status: 'pass', detail: `ServiceEntry ${name}` });
    }
  }
  return checks;
}

function webhookChecks(state: ClusterState, expect: Expectations): Check[] {
  const checks: Check[] = [];
  const bundles: string[] = [];
  for (const kind of ['mutating', 'validating'] as const) {
    const id = `webhook.${kind}`;
    const title = `${kind === 'mutating' ? 'Mutating' : 'Validating'}WebhookConfiguration ${expect.webhookName} is there and fails closed`;
    const read = state.webhooks[kind];
    if (!read.ok) {
      checks.push(unread(id, title, read.error));
      continue;
    }
    if (read.value === undefined) {
      checks.push({ id, title, status: 'fail', detail: 'it does not exist: nothing guards the entries', fix: 'install the chart, or apply webhook-config/' });
      continue;
    }
    const open = (read.value.webhooks ?? []).filter((w) => w.failurePolicy !== 'Fail');
    bundles.push(...(read.value.webhooks ?? []).map((w) => w.clientConfig?.caBundle ?? ''));
    if (open.length > 0) checks.push({ id, title, status: 'fail', detail: `failurePolicy ${open.map((w) => `${w.name ?? '?'}=${w.failurePolicy ?? 'unset'}`).join(', ')}: an entry is admitted unchecked whenever the webhook is down`, fix: 'set failurePolicy: Fail (the chart and webhook-config/ do)' });
    else checks.push({ id, title, status: 'pass', detail: `${(read.value.webhooks ?? []).length} webhook(s), failurePolicy Fail` });
  }
  const cert = state.servingCertificate;
  const title = "the webhook configurations trust the serving certificate, and it is not about to expire";
  if (cert === undefined) checks.push({ id: 'webhook.certificate', title, status: 'skip', detail: 'no --cert-secret given' });
  else if (!cert.ok) checks.push(unread('webhook.certificate', title, cert.error));
  else if (cert.value === undefined) checks.push({ id: 'webhook.certificate', title, status: 'fail', detail: 'the certificate Secret does not exist', fix: 'start the webhook in self mode once (it creates it), or create it' });
  else {
    const { caBundle, notAfter } = cert.value;
    const days = (notAfter.getTime() - expect.now.getTime()) / 86_400_000;
    const mismatched = bundles.filter((b) => b !== caBundle);
    if (mismatched.length > 0) checks.push({ id: 'webhook.certificate', title, status: 'fail', detail: `${mismatched.length} webhook(s) carry a caBundle other than the Secret's CA: the API server cannot call the webhook`, fix: "let the webhook (self mode) inject its CA, or set caBundle to the Secret's ca.crt (base64)" });
    else if (days < 14) checks.push({ id: 'webhook.certificate', title, status: 'fail', detail: `the serving certificate expires in ${days.toFixed(1)} days (${notAfter.toISOString()})`, fix: 'check the webhook renews it (edge_registrar_webhook_certificate_expiry_timestamp_seconds)' });
    else checks.push({ id: 'webhook.certificate', title, status: 'pass', detail: `caBundle matches; expires ${notAfter.toISOString()} (${Math.floor(days)} days)` });
  }
  return checks;
}

/** gatewayTopology from a pod's proxy.istio.io/config annotation, else the mesh default. */
function gatewayTopology(pod: Obj, mesh: MeshConfig | undefined): { proxyProtocol: boolean; numTrustedProxies: number; from: string } {
  let fromPod: GatewayTopology | undefined;
  const annotation = pod.metadata?.annotations?.['proxy.istio.io/config'];
  if (annotation !== undefined) {
    try {
      fromPod = (JSON.parse(annotation) as { gatewayTopology?: GatewayTopology }).gatewayTopology;
    } catch {
      fromPod = undefined; // YAML in the annotation: judged by the mesh default below
    }
  }
  const topology = fromPod ?? mesh?.defaultConfig?.gatewayTopology;
  return { proxyProtocol: topology?.proxyProtocol !== undefined, numTrustedProxies: topology?.numTrustedProxies ?? 0, from: fromPod !== undefined ? 'pod annotation' : 'meshConfig.defaultConfig' };
}

function gatewayCheck(state: ClusterState, expect: Expectations): Check {
  const id = 'gateway.client-address';
  const title = 'the ingress gateway takes the client address from the PROXY protocol and trusts no X-Forwarded-For hop';
  if (expect.telemetry === undefined) return { id, title, status: 'skip', detail: 'per-VPS metrics are off (--telemetry)' };
  if (!state.gatewayPods.ok) return unread(id, title, state.gatewayPods.error);
  if (state.gatewayPods.value.length === 0) return { id, title, status: 'fail', detail: `no gateway pod matches the Telemetry's selector in ${expect.telemetry.namespace}`, fix: '--telemetry-selector (perVpsMetrics.telemetry.selector) must match the ingress gateway pods' };
  const mesh = state.meshConfig.ok ? state.meshConfig.value : undefined;
  const bad = state.gatewayPods.value
    .map((pod) => ({ pod: pod.metadata?.name ?? '?', ...gatewayTopology(pod, mesh) }))
    .filter((t) => !t.proxyProtocol || t.numTrustedProxies !== 0);
  if (bad.length > 0) {
    return {
      id,
      title,
      status: 'fail',
      detail: bad.map((b) => `${b.pod}: proxyProtocol ${b.proxyProtocol ? 'on' : 'off'}, numTrustedProxies ${b.numTrustedProxies} (${b.from})`).join('; ') + ': x-envoy-external-address is the NLB or a client-chosen value, not the VPS',
      fix: 'set gatewayTopology: {proxyProtocol: {}, numTrustedProxies: 0} in the gateway pods\' proxy.istio.io/config annotation (and PROXY protocol on the NLB)',
    };
  }
  return { id, title, status: 'pass', detail: `${state.gatewayPods.value.length} gateway pod(s)` };
}

/**
 * Envoy counts a request as internal when its peer is inside the connection manager's
 * internal addresses, which istiod fills from meshNetworks' fromCidr ranges; on such a request
 * the client's own x-envoy-external-address is kept, and edge-registrar's expressions
 * attribute it to no VPS (`none`). A VPS inside such a range is never attributed.
 */
function internalAddressesCheck(state: ClusterState, expect: Expectations): Check {
  const id = 'gateway.internal-addresses';
  const title = 'no registered VPS is an internal address to the gateway (meshNetworks fromCidr)';
  if (expect.telemetry === undefined) return { id, title, status: 'skip', detail: 'per-VPS metrics are off (--telemetry)' };
  if (!state.meshNetworks.ok) return unread(id, title, state.meshNetworks.error);
  const ranges = Object.values(state.meshNetworks.value?.networks ?? {}).flatMap((n) => (n?.endpoints ?? []).flatMap((e) => (e.fromCidr === undefined ? [] : [e.fromCidr])));
  if (ranges.length === 0) return { id, title, status: 'pass', detail: 'no meshNetworks fromCidr: the gateway counts every request as external and writes x-envoy-external-address itself' };
  const registered = state.redis?.ok === true ? state.redis.value.registered : [];
  const inside = registered.flatMap((vps) => {
    const parsed = parseAddress(vps.address);
    const range = parsed.ok ? ranges.find((r) => { try { return cidrContains(r, parsed.ip); } catch { return false; } }) : undefined;
    return range === undefined ? [] : [`${vps.name} (${vps.address} in ${range})`];
  });
  if (inside.length > 0) {
    return { id, title, status: 'fail', detail: `the gateway counts these VPSs' requests as internal, so they are attributed to none: ${inside.slice(0, 10).join(', ')}${inside.length > 10 ? ` and ${inside.length - 10} more` : ''}`, fix: "take the VPSs' public addresses out of meshNetworks fromCidr (ConfigMap istio in istio-system, key meshNetworks)" };
  }
  return { id, title, status: 'pass', detail: `requests from ${ranges.join(', ')} count as internal at the gateway and are attributed to none; no registered VPS is in them` };
}

function telemetryCheck(state: ClusterState, expect: Expectations): Check {
  const id = 'telemetry.in-step';
  const title = 'the managed Telemetry exists and maps exactly the registered VPSs';
  if (expect.telemetry === undefined || state.telemetry === undefined) return { id, title, status: 'skip', detail: 'per-VPS metrics are off (--telemetry)' };
  const where = `${expect.telemetry.namespace}/${expect.telemetry.name}`;
  if (!state.telemetry.ok) return unread(id, title, state.telemetry.error);
  const telemetry = state.telemetry.value;
  if (telemetry === undefined) return { id, title, status: 'fail', detail: `Telemetry ${where} does not exist`, fix: 'run the sync daemon with --telemetry (perVpsMetrics.enabled) and check its log' };
  if (!isManagedTelemetry(telemetry)) return { id, title, status: 'fail', detail: `Telemetry ${where} is not managed by edge-registrar (no managed-by label): the daemon leaves it alone`, fix: 'delete it, or give ours another name (--telemetry-name)' };
  if (state.redis === undefined || !state.redis.ok) return { id, title, status: 'warn', detail: `Telemetry ${where} maps ${telemetry.metadata?.annotations?.[VPS_COUNT_ANNOTATION] ?? '?'} VPSs; the registered set was not read (no Redis)` };
  const registered = state.redis.value.registered;
  const digest = fleetDigest(registered);
  const count = telemetry.metadata?.annotations?.[VPS_COUNT_ANNOTATION];
  const unmapped = Number(telemetry.metadata?.annotations?.[UNMAPPED_ANNOTATION] ?? 0);
  if (unmapped > 0 && Number(count) + unmapped === registered.length) {
    return {
      id,
      title,
      status: 'fail',
      detail: `Telemetry ${where} maps ${count ?? '?'} of the ${registered.length} registered VPSs: the whole fleet would pass a limit, so the ${unmapped} newest registrations are left out and their requests tagged unregistered (no address is counted as a VPS that no longer holds it)`,
      fix: "the sync leader's log names the limit (edge_registrar_telemetry_refused{reason}): fewer metrics (--telemetry-metrics) fit a larger fleet, or raise --telemetry-max-object-bytes / --telemetry-max-expression-codepoints within etcd's and Envoy's limits",
    };
  }
  if (telemetry.metadata?.annotations?.[FLEET_DIGEST_ANNOTATION] !== digest) return { id, title, status: 'fail', detail: `Telemetry ${where} maps ${count ?? '?'} VPSs, not the ${registered.length} registered ones`, fix: "check the sync leader's log and edge_registrar_telemetry_syncs_total{outcome!=\"applied\"}" };
  const identity = sourceIdentityOverridden(telemetry) ? '; source identity on: Kiali draws each VPS → xboard' : '';
  return { id, title, status: 'pass', detail: `Telemetry ${where} maps all ${registered.length} registered VPSs${identity}` };
}

/** Whether the Telemetry overrides Istio's source_workload (--telemetry-source-identity). */
function sourceIdentityOverridden(telemetry: StoredTelemetry): boolean {
  const metrics = (telemetry.spec as { metrics?: { overrides?: { tagOverrides?: Record<string, unknown> }[] }[] } | undefined)?.metrics ?? [];
  return metrics.some((m) => m.overrides?.some((o) => o.tagOverrides?.['source_workload'] !== undefined) ?? false);
}

function directAttributionCheck(state: ClusterState): Check {
  const id = 'attribution.direct';
  const title = "direct VPS → Xboard traffic is attributed to each entry (Kiali draws xrayr → xboard)";
  const ambient = state.istiodEnv.ok ? state.istiodEnv.value?.PILOT_ENABLE_AMBIENT === 'true' : undefined;
  const mesh = state.meshConfig.ok ? state.meshConfig.value : undefined;
  const discovery = mesh?.defaultConfig?.proxyMetadata?.PEER_METADATA_DISCOVERY === 'true';
  const missing = [...(ambient === true ? [] : ['istiod PILOT_ENABLE_AMBIENT=true']), ...(discovery ? [] : ['PEER_METADATA_DISCOVERY=true for Xboard\'s proxies'])];
  if (missing.length === 0) return { id, title, status: 'pass', detail: 'ambient index on, peer metadata discovery on mesh-wide: direct callers show as their entry, app xrayr, version v1' };
  return {
    id,
    title,
    status: 'warn',
    detail: `without ${missing.join(' and ')}, Kiali shows direct VPS callers as "unknown" (gateway traffic is per VPS in Kiali only with --telemetry-source-identity, and per VPS in the gateway's metrics either way)`,
    fix: 'see docs/attribution.md, section 2',
  };
}

function fleetChecks(state: ClusterState, expect: Expectations): Check[] {
  const checks: Check[] = [];
  const streamTitle = 'the event stream is consumed: group present, no lag, nothing pending, no dead letters';
  if (state.redis === undefined) checks.push({ id: 'redis.stream', title: streamTitle, status: 'skip', detail: 'no --redis-url given' });
  else if (!state.redis.ok) checks.push({ id: 'redis.stream', title: streamTitle, status: 'fail', detail: `Redis: ${state.redis.error}`, fix: 'check --redis-url and that Redis answers' });
  else {
    const r = state.redis.value;
    if (!r.groupExists) checks.push({ id: 'redis.stream', title: streamTitle, status: 'fail', detail: 'the consumer group does not exist: no sync daemon has ever started', fix: 'deploy the sync daemon (the chart does)' });
    else {
      const problems = [...(r.lag !== null && r.lag > 0 ? [`lag ${r.lag}`] : []), ...(r.pending > 0 ? [`${r.pending} pending`] : []), ...(r.deadLetters > 0 ? [`${r.deadLetters} dead letters`] : [])];
      checks.push(problems.length === 0 ? { id: 'redis.stream', title: streamTitle, status: 'pass', detail: `lag ${r.lag ?? 'unknown'}, 0 pending, 0 dead letters` } : { id: 'redis.stream', title: streamTitle, status: 'warn', detail: problems.join(', '), fix: 'the dead-letter list says why each event was refused; lag and pending that do not shrink mean no leader is consuming', ...(r.deadLetters > 0 ? { run: expect.invocation.edgeRegistrar('dlq list') } : {}) });
    }
  }
  const pairTitle = 'every registered VPS has its entry, and every managed entry a registered VPS';
  if (!state.managedEntries.ok) checks.push(unread('fleet.entries', pairTitle, state.managedEntries.error));
  else if (state.redis === undefined || !state.redis.ok) checks.push({ id: 'fleet.entries', title: pairTitle, status: 'skip', detail: 'the registered set was not read (no Redis)' });
  else {
    const byVps = new Map(state.managedEntries.value.map((e) => [e.vpsId, e]));
    const registered = new Set(state.redis.value.registered.map((r) => r.vpsId));
    const withoutEntry = state.redis.value.registered.filter((r) => byVps.get(r.vpsId)?.name !== r.name).map((r) => `${r.name} (${r.vpsId})`);
    const orphans = state.managedEntries.value.filter((e) => !registered.has(e.vpsId)).map((e) => e.name);
    if (withoutEntry.length === 0 && orphans.length === 0) checks.push({ id: 'fleet.entries', title: pairTitle, status: 'pass', detail: `${registered.size} VPSs, ${state.managedEntries.value.length} managed entries` });
    else checks.push({ id: 'fleet.entries', title: pairTitle, status: 'fail', detail: [...(withoutEntry.length > 0 ? [`registered without an entry: ${withoutEntry.slice(0, 10).join(', ')}${withoutEntry.length > 10 ? ` and ${withoutEntry.length - 10} more` : ''}`] : []), ...(orphans.length > 0 ? [`entries without a registered VPS: ${orphans.slice(0, 10).join(', ')}${orphans.length > 10 ? ` and ${orphans.length - 10} more` : ''}`] : [])].join('; '), fix: "the sync daemon's resync repairs both within its interval; if they stay, its log says why (a refusal names the rule)" });
  }
  return checks;
}

const listOf = (names: readonly string[]): string => `${names.slice(0, 5).join(', ')}${names.length > 5 ? ` and ${names.length - 5} more` : ''}`;

function describeLimited(reach: Reach): string {
  if (reach.kind === 'anyone') return reach.why;
  const parts = [...reach.blocks.map((b) => (b.except.length === 0 ? b.cidr : `${b.cidr} except ${b.except.join(', ')}`)), ...(reach.selectors > 0 ? [`${reach.selectors} pod selector(s)`] : [])];
  return parts.length === 0 ? 'nothing' : parts.join(', ');
}

function webhookNetworkCheck(state: ClusterState): Check | undefined {
  const id = 'webhook.network';
  const title = "the webhook's port is reachable by the API server, not by every pod (a NetworkPolicy)";
  if (state.webhookNetwork === undefined) return undefined;
  if (!state.webhookNetwork.ok) return unread(id, title, state.webhookNetwork.error);
  const network = state.webhookNetwork.value;
  if (network === undefined) return { id, title, status: 'skip', detail: 'the webhook configurations call no Service in the cluster' };
  const port = network.targetPort.number ?? network.targetPort.name;
  const reach = ingressReach(network.policies, network.podLabels, (p) => p.port === undefined || p.port === network.targetPort.number || p.port === network.targetPort.name);
  // The API server may call from any address, but so may a pod: a /0 is as open as no policy.
  const everyAddress = everyAddressBlock(reach);
  if (reach.kind === 'anyone' || everyAddress !== undefined) {
    const why = reach.kind === 'anyone' ? reach.why : `NetworkPolicy ${everyAddress?.policy ?? '?'} admits ${everyAddress?.cidr ?? '?'}`;
    return {
      id,
      title,
      status: 'fail',
      detail: `Service ${network.service}: port ${port} is open to any source (${why}); with failurePolicy Fail, any pod that floods it can refuse every WorkloadEntry write`,
      fix: 'install the chart with networkPolicy.apiServerCIDRs set to the addresses the API server calls webhooks from (docs/operating.md, "Who may reach the webhook")',
    };
  }
  const pods = state.podAddresses?.ok === true ? podsInBlocks(reach, state.podAddresses.value) : [];
  if (pods.length > 0) {
    return {
      id,
      title,
      status: 'warn',
      detail: `Service ${network.service}: port ${port} admits ${describeLimited(reach)}, which holds the addresses of ${pods.length} pod(s): ${listOf(pods)}`,
      fix: "narrow networkPolicy.apiServerCIDRs to the control plane's addresses; where pods share them (EKS with the VPC CNI), the webhook's per-peer limits are what holds (docs/operating.md)",
    };
  }
  return { id, title, status: 'pass', detail: `Service ${network.service}: port ${port} admits ${describeLimited(reach)}; no pod's address is among them` };
}

/** Istio's own ports on a gateway pod (15000-15099: status, Prometheus, admin), which take no PROXY-protocol header. */
const isIstioPort = (port: number | string | undefined): boolean => (typeof port === 'number' && port >= 15000 && port <= 15099) || port === 'status-port' || port === 'http-envoy-prom';

function gatewayNetworkCheck(state: ClusterState, expect: Expectations): Check | undefined {
  if (expect.telemetry === undefined || state.gatewayPolicies === undefined) return undefined;
  const id = 'gateway.proxy-listener';
  const title = "pods cannot reach the gateway's PROXY-protocol listener (a pod that can could claim to be any VPS)";
  if (!state.gatewayPolicies.ok) return unread(id, title, state.gatewayPolicies.error);
  // No gateway pod: gateway.client-address already fails and says so.
  if (!state.gatewayPods.ok || state.gatewayPods.value.length === 0) return undefined;
  const policies = state.gatewayPolicies.value;
  const pods = state.podAddresses?.ok === true ? state.podAddresses.value : [];
  const open: string[] = [];
  for (const gateway of state.gatewayPods.value) {
    const reach = ingressReach(policies, gateway.metadata?.labels ?? {}, (p) => !isIstioPort(p.port));
    const how = reach.kind === 'anyone' ? reach.why : reach.selectors > 0 ? `${reach.selectors} pod selector(s) admit pods` : podsInBlocks(reach, pods).length > 0 ? `its address blocks hold ${listOf(podsInBlocks(reach, pods))}` : undefined;
    if (how !== undefined) open.push(`${gateway.metadata?.name ?? '?'} (${how})`);
  }
  if (open.length === 0) return { id, title, status: 'pass', detail: "no pod's address is admitted to the gateway's listeners" };
  return {
    id,
    title,
    status: 'warn',
    detail: `pods can open connections to ${listOf(open)} and send a PROXY-protocol header naming any VPS's address: their requests are then counted as that VPS's`,
    fix: "a NetworkPolicy that admits the load balancer to the gateway's listeners and excepts the pod network: the chart's perVpsMetrics.gatewayNetworkPolicy (docs/attribution.md)",
  };
}

export function diagnose(state: ClusterState, expect: Expectations): Check[] {
  const optional = [webhookNetworkCheck(state), gatewayNetworkCheck(state, expect)].filter((c): c is Check => c !== undefined);
  return [...crdChecks(state, expect), injectionCheck(state, expect), ...meshObjectChecks(state, expect), ...webhookChecks(state, expect), ...optional, gatewayCheck(state, expect), internalAddressesCheck(state, expect), telemetryCheck(state, expect), directAttributionCheck(state), ...fleetChecks(state, expect)];
}

const MARK: Record<Status, string> = { pass: '✓', fail: '✗', warn: '!', skip: '-' };

export function formatChecks(checks: readonly Check[]): string {
  const actionable = (c: Check): boolean => c.status === 'fail' || c.status === 'warn';
  const lines = checks.map((c) => `${MARK[c.status]} ${c.title}\n    ${c.detail}${c.fix !== undefined && actionable(c) ? `\n    fix: ${c.fix}` : ''}${c.run !== undefined && actionable(c) ? `\n    run: ${c.run}` : ''}`);
  const count = (s: Status) => checks.filter((c) => c.status === s).length;
  return `${lines.join('\n')}\n\n${count('pass')} passed, ${count('fail')} failed, ${count('warn')} warnings, ${count('skip')} skipped\n`;
}
