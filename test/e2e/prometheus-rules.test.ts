/**
 * The per-VPS recording rules and alerts, proven by promtool (Debian's prometheus package) on
 * synthetic series shaped exactly as Istio emits them: the ingress gateway's client-side
 * report (reporter="source") with our vps tags, one VPS on a shard tag, an unregistered caller,
 * Xboard's own server-side report (no tags, to be ignored), and the info metric from two sync
 * replicas.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { capture } from '../harness/capture.ts';
import { ensureDebianCommand } from '../harness/debian.ts';
import { series } from './prometheus-support.ts';

const RULES = fileURLToPath(new URL('../../charts/edge-registrar/files/per-vps-rules.yaml', import.meta.url));

/** The labels Istio's stats filter puts on the gateway's request metrics toward Xboard. */
const GATEWAY_TO_XBOARD = {
  reporter: 'source',
  source_workload: 'istio-ingressgateway',
  source_workload_namespace: 'istio-system',
  source_principal: 'spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account',
  source_app: 'istio-ingressgateway',
  source_version: 'unknown',
  source_canonical_service: 'istio-ingressgateway',
  source_canonical_revision: 'latest',
  source_cluster: 'Kubernetes',
  destination_workload: 'xboard',
  destination_workload_namespace: 'airport-prod',
  destination_principal: 'spiffe://cluster.local/ns/airport-prod/sa/xboard',
  destination_app: 'xboard',
  destination_version: 'v1',
  destination_service: 'xboard.airport-prod.svc.cluster.local',
  destination_service_name: 'xboard',
  destination_service_namespace: 'airport-prod',
  destination_canonical_service: 'xboard',
  destination_canonical_revision: 'v1',
  destination_cluster: 'Kubernetes',
  request_protocol: 'http',
  response_flags: '-',
  connection_security_policy: 'unknown',
  grpc_response_status: '',
  namespace: 'istio-system',
  pod: 'istio-ingressgateway-7f9c-abcde',
};

const fromVps = (vps: Record<string, string>, extra: Record<string, string> = {}) => ({ ...GATEWAY_TO_XBOARD, ...vps, ...extra });
const JP = { vps: 'vps-jp-01', vps_country: 'jp' };
/** A VPS on the second shard tag: vps is empty, vps_1 names it. */
const SG = { vps: '', vps_1: 'vps-sg-02', vps_country: '', vps_country_1: 'sg' };
const info = (name: string, country: string, address: string, vpsId: string, pod: string) => series('edge_registrar_vps_info', { name, country, address, vps_id: vpsId, pod, job: 'edge-registrar-sync' });

/** Per minute: jp 54 × 200 and 6 × 503 (1 request/s, 10% errors); sg 120 × 200; 30 unregistered. */
const INPUT = [
  { series: series('istio_requests_total', fromVps(JP, { response_code: '200' })), values: '0+54x40' },
  { series: series('istio_requests_total', fromVps(JP, { response_code: '503' })), values: '0+6x40' },
  { series: series('istio_requests_total', fromVps(SG, { response_code: '200' })), values: '0+120x40' },
  { series: series('istio_requests_total', fromVps({ vps: 'unregistered', vps_country: 'unregistered' }, { response_code: '200' })), values: '0+30x40' },
  // Xboard's sidecar reports the same requests as reporter="destination", without our tags.
  { series: series('istio_requests_total', { ...GATEWAY_TO_XBOARD, reporter: 'destination', response_code: '200', pod: 'xboard-5d8c7-xyz' }), values: '0+210x40' },
  // jp's latency: 50/s within 10 ms, 99/s within 50 ms, 100/s in all (p50 10 ms, p99 50 ms).
  ...[
    ['10', '0+3000x40'],
    ['50', '0+5940x40'],
    ['+Inf', '0+6000x40'],
  ].map(([le, values]) => ({ series: series('istio_request_duration_milliseconds_bucket', fromVps(JP, { response_code: '200', le: le! })), values: values! })),
  // Two sync replicas export the same info; us-03 is registered but never calls.
  ...['sync-a', 'sync-b'].flatMap((pod) => [
    { series: info('vps-jp-01', 'jp', '103.21.244.10', 'v1', pod), values: '1x40' },
    { series: info('vps-sg-02', 'sg', '45.76.10.2', 'v2', pod), values: '1x40' },
    { series: info('vps-us-03', 'us', '2606:4700::1111', 'v3', pod), values: '1x40' },
  ]),
  { series: 'edge_registrar_sync_leader{pod="sync-a", job="edge-registrar-sync"}', values: '1x40' },
  { series: 'edge_registrar_sync_leader{pod="sync-b", job="edge-registrar-sync"}', values: '0x40' },
  // The Telemetry maps only 2 of the 3 (behind the fleet), last confirmed at every minute.
  { series: 'edge_registrar_telemetry_vps{pod="sync-a", job="edge-registrar-sync"}', values: '2x40' },
  { series: 'edge_registrar_telemetry_last_sync_timestamp_seconds{pod="sync-a", job="edge-registrar-sync"}', values: '0+60x40' },
];

const at10 = (expr: string, expSamples: { labels: string; value: number }[]) => ({ expr, eval_time: '10m', exp_samples: expSamples });

const TESTS = {
  rule_files: [RULES],
  evaluation_interval: '1m',
  tests: [
    {
      interval: '1m',
      input_series: INPUT,
      promql_expr_test: [
        at10('edge_registrar_vps:istio_requests:rate5m', [
          { labels: 'edge_registrar_vps:istio_requests:rate5m{destination_service_name="xboard", response_code="200", vps="vps-jp-01", vps_country="jp"}', value: 0.9 },
          { labels: 'edge_registrar_vps:istio_requests:rate5m{destination_service_name="xboard", response_code="503", vps="vps-jp-01", vps_country="jp"}', value: 0.1 },
          { labels: 'edge_registrar_vps:istio_requests:rate5m{destination_service_name="xboard", response_code="200", vps="vps-sg-02", vps_country="sg"}', value: 2 },
          { labels: 'edge_registrar_vps:istio_requests:rate5m{destination_service_name="xboard", response_code="200", vps="unregistered", vps_country="unregistered"}', value: 0.5 },
        ]),
        at10('edge_registrar_vps:request_error_ratio:rate5m', [
          { labels: 'edge_registrar_vps:request_error_ratio:rate5m{vps="vps-jp-01", vps_country="jp"}', value: 0.1 },
          { labels: 'edge_registrar_vps:request_error_ratio:rate5m{vps="vps-sg-02", vps_country="sg"}', value: 0 },
          { labels: 'edge_registrar_vps:request_error_ratio:rate5m{vps="unregistered", vps_country="unregistered"}', value: 0 },
        ]),
        at10('edge_registrar_vps:request_duration_milliseconds:p50_5m', [{ labels: 'edge_registrar_vps:request_duration_milliseconds:p50_5m{vps="vps-jp-01", vps_country="jp"}', value: 10 }]),
        at10('edge_registrar_vps:request_duration_milliseconds:p99_5m', [{ labels: 'edge_registrar_vps:request_duration_milliseconds:p99_5m{vps="vps-jp-01", vps_country="jp"}', value: 50 }]),
        at10('edge_registrar_vps:last_request_timestamp_seconds', [
          { labels: 'edge_registrar_vps:last_request_timestamp_seconds{vps="vps-jp-01", vps_country="jp"}', value: 600 },
          { labels: 'edge_registrar_vps:last_request_timestamp_seconds{vps="vps-sg-02", vps_country="sg"}', value: 600 },
          { labels: 'edge_registrar_vps:last_request_timestamp_seconds{vps="unregistered", vps_country="unregistered"}', value: 600 },
        ]),
        at10('count(edge_registrar_vps:info)', [{ labels: '{}', value: 3 }]),
        at10('edge_registrar_vps:requests_with_info:rate5m', [
          { labels: 'edge_registrar_vps:requests_with_info:rate5m{address="103.21.244.10", vps="vps-jp-01", vps_country="jp", vps_id="v1"}', value: 1 },
          { labels: 'edge_registrar_vps:requests_with_info:rate5m{address="45.76.10.2", vps="vps-sg-02", vps_country="sg", vps_id="v2"}', value: 2 },
        ]),
        at10('edge_registrar_fleet:requests:rate5m', [{ labels: 'edge_registrar_fleet:requests:rate5m{destination_service_name="xboard"}', value: 3 }]),
        at10('round(edge_registrar_fleet:request_error_ratio:rate5m, 0.0001)', [{ labels: '{destination_service_name="xboard"}', value: 0.0333 }]),
        at10('edge_registrar_fleet:request_duration_milliseconds:p99_5m', [{ labels: 'edge_registrar_fleet:request_duration_milliseconds:p99_5m', value: 50 }]),
      ],
      alert_rule_test: [
        { eval_time: '14m', alertname: 'EdgeRegistrarVpsSilent', exp_alerts: [] },
        {
          eval_time: '25m',
          alertname: 'EdgeRegistrarVpsSilent',
          exp_alerts: [
            {
              exp_labels: { severity: 'warning', name: 'vps-us-03', country: 'us', address: '2606:4700::1111', vps_id: 'v3' },
              exp_annotations: {
                summary: 'VPS vps-us-03 is registered but has not called through the gateway for 15 minutes',
                description: 'VPS vps-us-03 (us, 2606:4700::1111) is registered with edge-registrar but the ingress gateway has reported no request from it for 15 minutes: the node is offline, XrayR stopped, or it reaches Xboard another way.',
              },
            },
          ],
        },
        {
          eval_time: '20m',
          alertname: 'EdgeRegistrarVpsErrorRatioHigh',
          exp_alerts: [
            {
              exp_labels: { severity: 'warning', vps: 'vps-jp-01', vps_country: 'jp' },
              exp_annotations: {
                summary: 'VPS vps-jp-01 gets 5xx for 10% of its requests',
                description: 'More than 5% of the requests from VPS vps-jp-01 (jp) through the ingress gateway failed with 5xx over the last 10 minutes.',
              },
            },
          ],
        },
        {
          eval_time: '20m',
          alertname: 'EdgeRegistrarUnregisteredCallers',
          exp_alerts: [
            {
              exp_labels: { severity: 'info' },
              exp_annotations: {
                summary: 'Requests reach the gateway from addresses that are no registered VPS (500m/s)',
                description: 'The ingress gateway sees requests whose trusted client address is no registered VPS: a VPS running before its register event, one retired but still running, or another client.',
              },
            },
          ],
        },
        {
          eval_time: '20m',
          alertname: 'EdgeRegistrarTelemetryBehindFleet',
          exp_alerts: [
            {
              exp_labels: { severity: 'warning' },
              exp_annotations: {
                summary: 'The managed Telemetry maps 2 VPSs, not the registered fleet',
                description: "The per-VPS Telemetry's content has not followed the registered VPSs for 10 minutes; its keeper's log and edge_registrar_telemetry_syncs_total{outcome=\"failed\"} or {outcome=\"refused\"} say why. When the whole fleet would pass a limit, the largest mapping that fits is written and edge_registrar_telemetry_unmapped_vps counts the newest registrations left out (their requests are tagged unregistered).",
              },
            },
          ],
        },
        { eval_time: '30m', alertname: 'EdgeRegistrarTelemetryNotSyncing', exp_alerts: [] },
        { eval_time: '30m', alertname: 'EdgeRegistrarMetricsAbsent', exp_alerts: [] },
      ],
    },
    {
      // No sync replica scraped, and a Telemetry last confirmed at time 0.
      interval: '1m',
      input_series: [{ series: 'edge_registrar_telemetry_last_sync_timestamp_seconds{pod="sync-a"}', values: '0x40' }],
      alert_rule_test: [
        { eval_time: '9m', alertname: 'EdgeRegistrarMetricsAbsent', exp_alerts: [] },
        {
          eval_time: '11m',
          alertname: 'EdgeRegistrarMetricsAbsent',
          exp_alerts: [
            {
              exp_labels: { severity: 'warning' },
              exp_annotations: {
                summary: "edge-registrar's sync metrics are absent",
                description: 'Prometheus scrapes no edge-registrar sync replica, so the address-to-VPS mapping behind the per-VPS metrics cannot be checked.',
              },
            },
          ],
        },
        { eval_time: '19m', alertname: 'EdgeRegistrarTelemetryNotSyncing', exp_alerts: [] },
        {
          eval_time: '21m',
          alertname: 'EdgeRegistrarTelemetryNotSyncing',
          exp_alerts: [
            {
              exp_labels: { severity: 'warning' },
              exp_annotations: {
                summary: 'The managed Telemetry has not been confirmed in step for 21m 0s',
                description: 'No sync replica has applied or confirmed the per-VPS Telemetry for over 15 minutes (it re-reads it every resync interval).',
              },
            },
          ],
        },
      ],
    },
  ],
};

let promtool: string;
let dir: string;

beforeAll(async () => {
  promtool = await ensureDebianCommand('promtool', 'prometheus');
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-promtool-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the per-VPS rules and alerts, with promtool', () => {
  it('check rules: the file is valid', async () => {
    const res = await capture(promtool, ['check', 'rules', RULES]);
    expect(res.stdout + res.stderr).toContain('SUCCESS: 17 rules found');
    expect(res.code).toBe(0);
  });

  it('test rules: every recording rule and alert on Istio-shaped series', async () => {
    const file = join(dir, 'per-vps.test.yaml');
    await writeFile(file, stringify(TESTS, { lineWidth: 0 }));
    const res = await capture(promtool, ['test', 'rules', file]);
    expect(res.stdout + res.stderr).toContain('SUCCESS');
    expect(res.code, res.stdout + res.stderr).toBe(0);
  });
});
