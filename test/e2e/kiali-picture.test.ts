/**
 * What Kiali draws for the airport-prod namespace, with the source identity overrides on and
 * off: the real sync daemon writes the Telemetry (--telemetry-source-identity) to the real API
 * server; cel-go evaluates every tag expression in it for each caller, with the gateway's node
 * metadata, as the gateway's istio.stats filter would; a fixture exporter serves the series the
 * gateway and Xboard's sidecar would then report; a real Prometheus scrapes them; and Kiali's
 * three namespace-graph queries (kiali/kiali graph/telemetry/istio/istio.go,
 * buildNamespaceTrafficMap, transcribed exactly below) read them back into edges the way its
 * populateTrafficMap does.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { renderTelemetry, DEFAULT_TELEMETRY_OPTIONS, type TelemetryObject } from '../../src/mesh-telemetry/telemetry-object.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { startPrometheus, type RunningPrometheus } from '../harness/prometheus-server.ts';
import { evaluateCel, type CelRequest } from './cel-support.ts';
import { series } from './prometheus-support.ts';
import { publishRegister, settled, startSyncTestBed, telemetryMapping, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { kubectl, waitFor } from './support.ts';

const VPSS = [
  { vpsId: 'vps-8101', name: 'vps-jp-81', address: '103.21.244.81', country: 'jp' },
  { vpsId: 'vps-8102', name: 'vps-sg-82', address: '2400:cb00:2049::82', country: 'sg' },
];
/** Callers through the gateway: the two VPSs, a stranger, and a request without the header (in-cluster). */
const CALLERS: { caller: string; headers: Record<string, string> }[] = [
  { caller: 'vps-jp-81', headers: { 'x-envoy-external-address': '103.21.244.81' } },
  { caller: 'vps-sg-82', headers: { 'x-envoy-external-address': '2400:cb00:2049::82' } },
  { caller: 'stranger', headers: { 'x-envoy-external-address': '203.0.113.9' } },
  { caller: 'no header', headers: {} },
];
/** The ingress gateway's node metadata, as its pod's agent sends it (what the stats filter's default source tags come from). */
const GATEWAY_NODE = {
  metadata: {
    WORKLOAD_NAME: 'istio-ingressgateway',
    NAMESPACE: 'istio-system',
    LABELS: { app: 'istio-ingressgateway', istio: 'ingressgateway', 'service.istio.io/canonical-name': 'istio-ingressgateway', 'service.istio.io/canonical-revision': 'latest' },
  },
};
/** The tags the gateway's stats filter gives a request to Xboard in mode CLIENT before any override (istio_stats.cc, populatePeerInfo). */
const GATEWAY_DEFAULTS = {
  reporter: 'source',
  source_workload: 'istio-ingressgateway',
  source_workload_namespace: 'istio-system',
  source_app: 'istio-ingressgateway',
  source_version: '',
  source_canonical_service: 'istio-ingressgateway',
  source_canonical_revision: 'latest',
  source_principal: 'spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account',
  destination_workload: 'xboard',
  destination_workload_namespace: 'airport-prod',
  destination_service: 'xboard.airport-prod.svc.cluster.local',
  destination_service_name: 'xboard',
  destination_service_namespace: 'airport-prod',
  destination_canonical_service: 'xboard',
  destination_canonical_revision: 'v1',
  request_protocol: 'http',
  response_code: '200',
  response_flags: '-',
  connection_security_policy: 'unknown',
};

/** Kiali's namespace graph queries for HTTP, as in buildNamespaceTrafficMap. */
function kialiQueries(namespace: string, durationSeconds: number): string[] {
  const requestsMetric = 'istio_requests_total';
  const groupBy = 'source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags';
  return [
    // 1) traffic from "unknown": destination telemetry
    `sum(rate(${requestsMetric}{reporter="destination",source_workload="unknown",destination_workload_namespace="${namespace}"} [${durationSeconds}s])) by (${groupBy})`,
    // 2) traffic from workloads outside the namespace: source telemetry
    `sum(rate(${requestsMetric}{reporter="source",source_workload_namespace!="${namespace}",source_workload!="unknown",destination_service_namespace="${namespace}"} [${durationSeconds}s])) by (${groupBy})`,
    // 3) traffic from workloads inside the namespace: source telemetry
    `sum(rate(${requestsMetric}{reporter="source",source_workload_namespace="${namespace}"} [${durationSeconds}s])) by (${groupBy})`,
  ];
}

/** The labels populateTrafficMap requires of a row (grpc_response_status is optional); a row without one is skipped. */
const REQUIRED = ['source_workload_namespace', 'source_workload', 'source_canonical_service', 'source_canonical_revision', 'destination_service_namespace', 'destination_service', 'destination_service_name', 'destination_workload_namespace', 'destination_workload', 'destination_canonical_service', 'destination_canonical_revision', 'request_protocol', 'response_code', 'response_flags'];

interface KialiGraph {
  /** Workload graph edges: namespace/workload → namespace/workload. */
  workloads: string[];
  /** App graph edges: namespace/app (revision) → namespace/app (revision). */
  apps: string[];
  skipped: number;
}

async function kialiGraph(prometheus: RunningPrometheus, namespace: string): Promise<KialiGraph> {
  const workloads = new Set<string>();
  const apps = new Set<string>();
  let skipped = 0;
  for (const query of kialiQueries(namespace, 60)) {
    for (const row of await prometheus.query(query)) {
      const m = row.metric;
      if (REQUIRED.some((label) => m[label] === undefined)) {
        skipped++;
        continue;
      }
      workloads.add(`${m.source_workload_namespace}/${m.source_workload} → ${m.destination_workload_namespace}/${m.destination_workload}`);
      apps.add(`${m.source_workload_namespace}/${m.source_canonical_service} (${m.source_canonical_revision}) → ${m.destination_service_namespace}/${m.destination_canonical_service} (${m.destination_canonical_revision})`);
    }
  }
  return { workloads: [...workloads].sort(), apps: [...apps].sort(), skipped };
}

/** Each caller's tags on the gateway's series: the defaults, overridden by what cel-go computes from the Telemetry's expressions. */
async function gatewayTags(telemetry: Pick<TelemetryObject, 'spec'>): Promise<Record<string, string>[]> {
  const overrides = (telemetry.spec as { metrics: { overrides: { tagOverrides: Record<string, { value: string }> }[] }[] }).metrics[0]!.overrides[0]!.tagOverrides;
  const tags = Object.keys(overrides);
  const requests: CelRequest[] = CALLERS.map((c) => ({ headers: c.headers, node: GATEWAY_NODE }));
  const outcome = await evaluateCel(tags.map((t) => overrides[t]!.value), requests);
  expect(outcome.compiled.every((c) => c.ok)).toBe(true);
  return CALLERS.map((_, r) => ({ ...GATEWAY_DEFAULTS, ...Object.fromEntries(tags.map((t, e) => [t, outcome.results[r]![e]!.value ?? `error: ${outcome.results[r]![e]!.error}`])) }));
}

/** An exporter of the gateway's series for each caller, and Xboard's sidecar's (reporter="destination", the gateway as its mTLS peer). */
async function serveSeries(perCaller: Record<string, string>[]): Promise<Server> {
  const started = Date.now();
  const server = createServer((_req, res) => {
    const count = Math.floor(((Date.now() - started) / 1000) * 2);
    const lines = perCaller.map((tags) => `${series('istio_requests_total', tags)} ${count}`);
    const destination = { ...GATEWAY_DEFAULTS, reporter: 'destination', connection_security_policy: 'mutual_tls' };
    lines.push(`${series('istio_requests_total', destination)} ${count * perCaller.length}`);
    res.setHeader('content-type', 'text/plain; version=0.0.4');
    res.end(`# TYPE istio_requests_total counter\n${lines.join('\n')}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

let bed: SyncTestBed | undefined;
let sync: RunningSync | undefined;
const servers: Server[] = [];
const prometheuses: RunningPrometheus[] = [];
let withIdentity: Record<string, string>[] = [];
let withoutIdentity: Record<string, string>[] = [];
let promOn: RunningPrometheus | undefined;
let promOff: RunningPrometheus | undefined;

beforeAll(async () => {
  bed = await startSyncTestBed('kiali');
  const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url);
  sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, sourceIdentity: true, coalesceMs: 300 } });
  for (const v of VPSS) await publishRegister(bed.redis, v.vpsId, v.name, v.address, v.country);
  await settled(bed.redis);
  const written = await telemetryMapping(VPSS.length);
  withIdentity = await gatewayTags(written as unknown as TelemetryObject);
  // The same fleet without the option: only the vps tags.
  const plain = renderTelemetry({ ...DEFAULT_TELEMETRY_OPTIONS, namespace: 'istio-system', name: 'edge-registrar-vps' }, VPSS);
  withoutIdentity = await gatewayTags(plain.object);
  for (const tags of [withIdentity, withoutIdentity]) {
    const server = await serveSeries(tags);
    servers.push(server);
    const port = (server.address() as { port: number }).port;
    prometheuses.push(await startPrometheus([{ job: 'istio-mesh', target: `127.0.0.1:${port}` }], []));
  }
  [promOn, promOff] = prometheuses;
}, 240_000);

afterAll(async () => {
  for (const p of prometheuses) await p.stop();
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  await sync?.stop();
  await kubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', '--all']);
  if (bed !== undefined) await stopSyncTestBed(bed);
});

describe('the source identity overrides, as the gateway evaluates them (cel-go, the Telemetry the daemon wrote)', () => {
  it("name a registered VPS's entry in every source tag, and leave every other caller the gateway's own values", () => {
    const pick = (tags: Record<string, string>) => [tags.source_workload, tags.source_workload_namespace, tags.source_app, tags.source_version, tags.source_canonical_service, tags.source_canonical_revision, tags.vps].join(' ');
    expect(withIdentity.map(pick)).toEqual([
      'vps-jp-81 airport-prod xrayr v1 xrayr v1 vps-jp-81',
      'vps-sg-82 airport-prod xrayr v1 xrayr v1 vps-sg-82',
      'istio-ingressgateway istio-system istio-ingressgateway  istio-ingressgateway latest unregistered',
      'istio-ingressgateway istio-system istio-ingressgateway  istio-ingressgateway latest none',
    ]);
    // Without the option the source tags are the stats filter's own for every caller.
    expect(withoutIdentity.map((t) => t.source_workload)).toEqual(['istio-ingressgateway', 'istio-ingressgateway', 'istio-ingressgateway', 'istio-ingressgateway']);
  });
});

describe("what Kiali's namespace graph queries read from a real Prometheus", () => {
  it('draw each VPS → xboard with the option, and the gateway → xboard for every other caller', async () => {
    let graph: KialiGraph | undefined;
    await waitFor(async () => (graph = await kialiGraph(promOn!, 'airport-prod')).workloads.length === 3, "Kiali's queries to see three edges", 60_000).catch(() => undefined);
    expect(graph).toEqual({
      workloads: ['airport-prod/vps-jp-81 → airport-prod/xboard', 'airport-prod/vps-sg-82 → airport-prod/xboard', 'istio-system/istio-ingressgateway → airport-prod/xboard'],
      apps: ['airport-prod/xrayr (v1) → airport-prod/xboard (v1)', 'istio-system/istio-ingressgateway (latest) → airport-prod/xboard (v1)'],
      skipped: 0,
    });
  });

  it('draw only the gateway → xboard without it: Xboard\'s own (destination) series are read only for "unknown" sources', async () => {
    let graph: KialiGraph | undefined;
    await waitFor(async () => (graph = await kialiGraph(promOff!, 'airport-prod')).workloads.length > 0, "Kiali's queries to see an edge", 60_000).catch(() => undefined);
    expect(graph).toEqual({ workloads: ['istio-system/istio-ingressgateway → airport-prod/xboard'], apps: ['istio-system/istio-ingressgateway (latest) → airport-prod/xboard (v1)'], skipped: 0 });
    // The destination series are there, and name the gateway: no query above reads them.
    const destination = await promOff!.query('sum by (source_workload) (istio_requests_total{reporter="destination"})');
    expect(destination.map((r) => r.metric.source_workload)).toEqual(['istio-ingressgateway']);
  });
});
