/**
 * The per-VPS rules and the dashboard against a real Prometheus server (Debian's package),
 * scraping the real sync daemon's /metrics (with the managed Telemetry on) and a fixture
 * exporter of the ingress gateway's Istio series. The fixture's vps tags are what cel-go
 * computes from the Telemetry the daemon actually wrote, for each caller's address, so the
 * chain address → Telemetry → tag → rule → dashboard is exercised end to end.
 */
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { startPrometheus, type RunningPrometheus } from '../harness/prometheus-server.ts';
import { evaluateCel } from './cel-support.ts';
import type { K8sObject } from './helm-support.ts';
import { series } from './prometheus-support.ts';
import { publishRegister, settled, startSyncTestBed, telemetryMapping, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { kubectl, waitFor } from './support.ts';

const RULES = fileURLToPath(new URL('../../charts/edge-registrar/files/per-vps-rules.yaml', import.meta.url));
const DASHBOARD = new URL('../../charts/edge-registrar/files/per-vps-dashboard.json', import.meta.url);
const VPSS = [
  { vpsId: 'vps-7101', name: 'vps-jp-71', address: '103.21.244.71', country: 'jp', perSecond: 4, errorsPerSecond: 1 },
  { vpsId: 'vps-7102', name: 'vps-sg-72', address: '2400:cb00:2049::72', country: 'sg', perSecond: 2, errorsPerSecond: 0 },
  // Registered, never calls: the silent one.
  { vpsId: 'vps-7103', name: 'vps-us-73', address: '104.16.0.73', country: 'us', perSecond: 0, errorsPerSecond: 0 },
];
const STRANGER = '203.0.113.9';

const GATEWAY = {
  reporter: 'source',
  source_workload: 'istio-ingressgateway',
  source_workload_namespace: 'istio-system',
  source_canonical_service: 'istio-ingressgateway',
  destination_workload: 'xboard',
  destination_workload_namespace: 'airport-prod',
  destination_service: 'xboard.airport-prod.svc.cluster.local',
  destination_service_name: 'xboard',
  destination_canonical_service: 'xboard',
  request_protocol: 'http',
};

let bed: SyncTestBed | undefined;
let sync: RunningSync | undefined;
let exporter: Server | undefined;
let prometheus: RunningPrometheus | undefined;

/** The gateway's tags for a request from `address`, computed by cel-go from the Telemetry in the cluster. */
async function tagsFor(telemetry: K8sObject, addresses: string[]): Promise<Record<string, string>[]> {
  const overrides = telemetry.spec.metrics[0].overrides[0].tagOverrides as Record<string, { value: string }>;
  const tags = Object.keys(overrides);
  const outcome = await evaluateCel(tags.map((t) => overrides[t]!.value), addresses.map((a) => ({ headers: { 'x-envoy-external-address': a } })));
  return addresses.map((_, r) => Object.fromEntries(tags.map((t, e) => [t, outcome.results[r]![e]!.value ?? 'error']).filter(([, v]) => v !== '')));
}

beforeAll(async () => {
  bed = await startSyncTestBed('prometheus');
  const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url);
  sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, coalesceMs: 300 } });
  for (const v of VPSS) await publishRegister(bed.redis, v.vpsId, v.name, v.address, v.country);
  await settled(bed.redis);
  const telemetry = await telemetryMapping(VPSS.length);
  const [jp, sg, , stranger] = await tagsFor(telemetry, [...VPSS.map((v) => v.address), STRANGER]);
  expect([jp, sg, stranger]).toEqual([
    { vps: 'vps-jp-71', vps_country: 'jp' },
    { vps: 'vps-sg-72', vps_country: 'sg' },
    { vps: 'unregistered', vps_country: 'unregistered' },
  ]);

  // The gateway's Istio series for those callers: counters that grow with time.
  const started = Date.now();
  exporter = createServer((_req, res) => {
    const seconds = (Date.now() - started) / 1000;
    const lines: string[] = [];
    const callers = [
      { tags: jp!, ok: 3, errors: 1 },
      { tags: sg!, ok: 2, errors: 0 },
      { tags: stranger!, ok: 1, errors: 0 },
    ];
    for (const c of callers) {
      lines.push(`${series('istio_requests_total', { ...GATEWAY, ...c.tags, response_code: '200' })} ${Math.floor(seconds * c.ok)}`);
      if (c.errors > 0) lines.push(`${series('istio_requests_total', { ...GATEWAY, ...c.tags, response_code: '503' })} ${Math.floor(seconds * c.errors)}`);
      const all = Math.floor(seconds * (c.ok + c.errors));
      for (const [le, share] of [['10', 0.5], ['50', 0.99], ['+Inf', 1]] as const) {
        lines.push(`${series('istio_request_duration_milliseconds_bucket', { ...GATEWAY, ...c.tags, response_code: '200', le })} ${Math.floor(all * share)}`);
      }
    }
    res.setHeader('content-type', 'text/plain; version=0.0.4');
    res.end(`# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds_bucket counter\n${lines.join('\n')}\n`);
  });
  await new Promise<void>((resolve) => exporter!.listen(0, '127.0.0.1', resolve));
  const exporterPort = (exporter.address() as { port: number }).port;
  prometheus = await startPrometheus(
    [
      { job: 'istio-ingressgateway', target: `127.0.0.1:${exporterPort}` },
      { job: 'edge-registrar-sync', target: `127.0.0.1:${sync.port}` },
    ],
    [RULES],
  );
}, 240_000);

afterAll(async () => {
  await prometheus?.stop();
  await new Promise((resolve) => (exporter ? exporter.close(resolve) : resolve(undefined)));
  await sync?.stop();
  await kubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', '--all']);
  if (bed !== undefined) await stopSyncTestBed(bed);
});

describe('a real Prometheus with the per-VPS rules', () => {
  it('records each VPS with its rate, errors, latency and its info labels from the real sync daemon', async () => {
    const withInfo = async () => (await prometheus!.query('edge_registrar_vps:requests_with_info:rate5m')).map((r) => `${r.metric.vps} ${r.metric.vps_country} ${r.metric.address} ${r.metric.vps_id}`).sort();
    await waitFor(async () => (await withInfo()).length === 2, 'per-VPS rates joined with edge_registrar_vps_info', 60_000);
    expect(await withInfo()).toEqual(['vps-jp-71 jp 103.21.244.71 vps-7101', 'vps-sg-72 sg 2400:cb00:2049::72 vps-7102']);
    const ratio = await prometheus!.query('edge_registrar_vps:request_error_ratio:rate5m{vps="vps-jp-71"}');
    expect(Number(ratio[0]!.value[1])).toBeCloseTo(0.25, 1);
    const p99 = await prometheus!.query('edge_registrar_vps:request_duration_milliseconds:p99_5m{vps="vps-sg-72"}');
    expect(Number(p99[0]!.value[1])).toBeGreaterThan(10);
    expect(Number(p99[0]!.value[1])).toBeLessThanOrEqual(50);
    expect((await prometheus!.query('edge_registrar_vps:istio_requests:rate5m{vps="unregistered"}')).length).toBe(1);
    expect(Number((await prometheus!.query('count(edge_registrar_vps:info)'))[0]!.value[1])).toBe(3);
    expect(Number((await prometheus!.query('max(edge_registrar_telemetry_vps)'))[0]!.value[1])).toBe(3);
    // The silent VPS: registered, no requests (the alert fires after 15 minutes of this).
    const silent = await prometheus!.query('edge_registrar_vps:info unless on (name) label_replace(sum by (vps) (edge_registrar_vps:istio_requests:rate5m) > 0, "name", "$1", "vps", "(.+)")');
    expect(silent.map((r) => r.metric.name)).toEqual(['vps-us-73']);
  });

  it("returns data for every query of the Grafana dashboard", async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: { title: string; targets: { expr: string; refId: string }[] }[] };
    const queries = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, ref: t.refId, expr: t.expr })));
    expect(queries.length).toBeGreaterThanOrEqual(10);
    const empty: string[] = [];
    await waitFor(async () => {
      empty.length = 0;
      for (const q of queries) if ((await prometheus!.query(q.expr)).length === 0) empty.push(`${q.panel} ${q.ref}: ${q.expr}`);
      return empty.length === 0;
    }, 'every dashboard query to return data', 60_000).catch(() => undefined);
    expect(empty).toEqual([]);
  });
});
