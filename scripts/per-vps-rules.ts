/**
 * Writes charts/edge-registrar/files/per-vps-rules.yaml, the Prometheus recording rules and
 * alerts for per-VPS metrics: the plain rules file, and what the chart's PrometheusRule holds.
 * Generated because every rule merges the shard tags (vps, vps_1, ... vps_16), which is long
 * and mechanical by hand; a unit test keeps the file equal to this output.
 */
import { writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { MAX_SHARD_TAGS } from '../src/mesh-telemetry/tag-expressions.ts';

/** Every shard tag the Telemetry may write (it refuses to need more). */
const shardTags = (tag: string): string[] => Array.from({ length: MAX_SHARD_TAGS }, (_, i) => (i === 0 ? tag : `${tag}_${i}`));

/**
 * `metric`'s 5-minute rate at the gateway (reporter="source"), only series that carry a vps
 * tag, with the shards merged into `vps` and `vps_country`: exactly one shard is non-empty, and
 * label_join with an empty separator concatenates the one value with nothing.
 */
function mergedRate(metric: string): string {
  const tagged = shardTags('vps').map((tag) => `rate(${metric}{reporter="source", ${tag}!=""}[5m])`);
  const merged = `label_join(\n  (\n    ${tagged.join('\n    or\n    ')}\n  ),\n  "vps", "", ${shardTags('vps').map((t) => `"${t}"`).join(', ')}\n)`;
  return `label_join(\n${merged},\n"vps_country", "", ${shardTags('vps_country').map((t) => `"${t}"`).join(', ')}\n)`;
}

const REQUESTS = 'edge_registrar_vps:istio_requests:rate5m';
const BUCKETS = 'edge_registrar_vps:istio_request_duration_milliseconds_bucket:rate5m';
const INFO = 'edge_registrar_vps:info';
const REGISTERED = 'vps!~"unregistered|none"';

/** errors / all by `by`, 0 rather than nothing when there are no 5xx. */
function errorRatio(selector: string, by: string): string {
  const all = `sum by (${by}) (${REQUESTS}${selector === '' ? '' : `{${selector}}`})`;
  const errors = `sum by (${by}) (${REQUESTS}{${[selector, 'response_code=~"5.."'].filter((s) => s !== '').join(', ')}})`;
  return `(${errors} or ${all} * 0)\n/\n${all}`;
}

export function perVpsRules(): unknown {
  return {
    groups: [
      {
        name: 'edge-registrar.per-vps.records',
        rules: [
          { record: REQUESTS, expr: `sum by (vps, vps_country, destination_service_name, response_code) (\n${mergedRate('istio_requests_total')}\n)` },
          { record: BUCKETS, expr: `sum by (vps, vps_country, le) (\n${mergedRate('istio_request_duration_milliseconds_bucket')}\n)` },
          { record: 'edge_registrar_vps:request_error_ratio:rate5m', expr: errorRatio('', 'vps, vps_country') },
          { record: 'edge_registrar_vps:request_duration_milliseconds:p50_5m', expr: `histogram_quantile(0.5, ${BUCKETS})` },
          { record: 'edge_registrar_vps:request_duration_milliseconds:p99_5m', expr: `histogram_quantile(0.99, ${BUCKETS})` },
          // When each VPS was last seen calling: max_over_time of this over a day is "last seen".
          { record: 'edge_registrar_vps:last_request_timestamp_seconds', expr: `max by (vps, vps_country) (timestamp(${REQUESTS} > 0))` },
          // The info metric once per VPS, whichever sync replicas export it (two would make a join many-to-many).
          { record: INFO, expr: 'max by (name, address, country, vps_id) (edge_registrar_vps_info)' },
          {
            record: 'edge_registrar_vps:requests_with_info:rate5m',
            expr: `sum by (vps, vps_country) (${REQUESTS}{${REGISTERED}})\n* on (vps) group_left (address, vps_id)\nlabel_replace(${INFO}, "vps", "$1", "name", "(.+)")`,
          },
          { record: 'edge_registrar_fleet:requests:rate5m', expr: `sum by (destination_service_name) (${REQUESTS}{${REGISTERED}})` },
          { record: 'edge_registrar_fleet:request_error_ratio:rate5m', expr: errorRatio(REGISTERED, 'destination_service_name') },
          { record: 'edge_registrar_fleet:request_duration_milliseconds:p99_5m', expr: `histogram_quantile(0.99, sum by (le) (${BUCKETS}{${REGISTERED}}))` },
        ],
      },
      {
        name: 'edge-registrar.per-vps.alerts',
        rules: [
          {
            alert: 'EdgeRegistrarVpsSilent',
            expr: `${INFO}\nunless on (name)\nlabel_replace(sum by (vps) (${REQUESTS}) > 0, "name", "$1", "vps", "(.+)")`,
            for: '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'VPS {{ $labels.name }} is registered but has not called through the gateway for 15 minutes',
              description: 'VPS {{ $labels.name }} ({{ $labels.country }}, {{ $labels.address }}) is registered with edge-registrar but the ingress gateway has reported no request from it for 15 minutes: the node is offline, XrayR stopped, or it reaches Xboard another way.',
            },
          },
          {
            alert: 'EdgeRegistrarVpsErrorRatioHigh',
            expr: `edge_registrar_vps:request_error_ratio:rate5m{${REGISTERED}} > 0.05\nand on (vps, vps_country)\nsum by (vps, vps_country) (${REQUESTS}) > 0.1`,
            for: '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'VPS {{ $labels.vps }} gets 5xx for {{ $value | humanizePercentage }} of its requests',
              description: 'More than 5% of the requests from VPS {{ $labels.vps }} ({{ $labels.vps_country }}) through the ingress gateway failed with 5xx over the last 10 minutes.',
            },
          },
          {
            alert: 'EdgeRegistrarUnregisteredCallers',
            expr: `sum(${REQUESTS}{vps="unregistered"}) > 0`,
            for: '10m',
            labels: { severity: 'info' },
            annotations: {
              summary: 'Requests reach the gateway from addresses that are no registered VPS ({{ $value | humanize }}/s)',
              description: 'The ingress gateway sees requests whose trusted client address is no registered VPS: a VPS running before its register event, one retired but still running, or another client.',
            },
          },
          {
            alert: 'EdgeRegistrarTelemetryBehindFleet',
            expr: `max(edge_registrar_telemetry_vps) != count(${INFO})`,
            for: '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The managed Telemetry maps {{ $value }} VPSs, not the registered fleet',
              description: "The per-VPS Telemetry's content has not followed the registered VPSs for 10 minutes; its keeper's log and edge_registrar_telemetry_syncs_total{outcome=\"failed\"} or {outcome=\"refused\"} say why. When the whole fleet would pass a limit, the largest mapping that fits is written and edge_registrar_telemetry_unmapped_vps counts the newest registrations left out (their requests are tagged unregistered).",
            },
          },
          {
            alert: 'EdgeRegistrarTelemetryNotSyncing',
            expr: 'time() - max(edge_registrar_telemetry_last_sync_timestamp_seconds) > 900',
            for: '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The managed Telemetry has not been confirmed in step for {{ $value | humanizeDuration }}',
              description: 'No sync replica has applied or confirmed the per-VPS Telemetry for over 15 minutes (it re-reads it every resync interval).',
            },
          },
          {
            alert: 'EdgeRegistrarMetricsAbsent',
            expr: 'absent(edge_registrar_sync_leader)',
            for: '10m',
            labels: { severity: 'warning' },
            annotations: {
              summary: "edge-registrar's sync metrics are absent",
              description: 'Prometheus scrapes no edge-registrar sync replica, so the address-to-VPS mapping behind the per-VPS metrics cannot be checked.',
            },
          },
        ],
      },
    ],
  };
}

export const RULES_FILE = new URL('../charts/edge-registrar/files/per-vps-rules.yaml', import.meta.url);

export function renderRulesFile(): string {
  return `# Generated by scripts/per-vps-rules.ts (npm run rules); edit that, not this.\n${stringify(perVpsRules(), { lineWidth: 0 })}`;
}

if (import.meta.main) await writeFile(RULES_FILE, renderRulesFile());
