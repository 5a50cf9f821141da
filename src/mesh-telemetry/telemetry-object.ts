/**
 * The managed Istio Telemetry: metric tag overrides on the ingress gateway, in mode CLIENT
 * (a gateway reports its requests as reporter="source"), that name the VPS and its country
 * for every request from a registered VPS's address. Pure: the object from the options and
 * the fleet; writing it is the keeper's job.
 */
import { createHash } from 'node:crypto';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../policy/markers.ts';
import type { IstioMetric } from './istio-metrics.ts';
import { renderSourceIdentity, type SourceIdentity } from './source-identity.ts';
import { renderTagExpressions, type MappedVps, type TagExpression } from './tag-expressions.ts';

export const TELEMETRY_API_VERSION = 'telemetry.istio.io/v1';
/** Where the API serves it, for CustomObjectsApi calls. */
export const TELEMETRY_COORDINATES = { group: 'telemetry.istio.io', version: 'v1', plural: 'telemetries' } as const;
/** How many VPSs the Telemetry maps and a digest of what it maps, for `doctor` and humans. */
export const VPS_COUNT_ANNOTATION = 'edge-registrar.io/vps-count';
export const FLEET_DIGEST_ANNOTATION = 'edge-registrar.io/fleet-digest';
/** How many registered VPSs it leaves out because the whole fleet would pass a limit (fit-mapping.ts): 0 normally. */
export const UNMAPPED_ANNOTATION = 'edge-registrar.io/unmapped-vps';

export interface TargetRef {
  group: string;
  kind: string;
  name: string;
}

export interface TelemetryOptions {
  name: string;
  namespace: string;
  /** The gateway's pod labels; ignored when targetRefs are given (Gateway API gateways). */
  selector: Record<string, string>;
  targetRefs: TargetRef[];
  metrics: IstioMetric[];
  /** Tag names: the VPS's name and its country. */
  vpsTag: string;
  countryTag: string;
  /** The metrics provider the overrides apply to. */
  provider: string;
  maxExpressionCodepoints: number;
  /**
   * The largest object written (its JSON). etcd refuses an object over 1.5 MiB (its
   * --max-request-bytes); the API server adds metadata (managedFields, resourceVersion) to
   * what is sent, so the default leaves room for it.
   */
  maxObjectBytes: number;
  /**
   * When set, Istio's source tags name a registered VPS's WorkloadEntry (so Kiali draws each
   * VPS → Xboard); undefined leaves them alone (the default).
   */
  sourceIdentity?: SourceIdentity | undefined;
}

export const DEFAULT_TELEMETRY_OPTIONS: Omit<TelemetryOptions, 'name' | 'namespace'> = {
  selector: { istio: 'ingressgateway' },
  targetRefs: [],
  metrics: ['REQUEST_COUNT', 'REQUEST_DURATION'],
  vpsTag: 'vps',
  countryTag: 'vps_country',
  provider: 'prometheus',
  maxExpressionCodepoints: 40_000,
  maxObjectBytes: 1_400_000,
};

/** The Telemetry as written. */
export interface TelemetryObject {
  apiVersion: string;
  kind: 'Telemetry';
  metadata: { name: string; namespace: string; labels: Record<string, string>; annotations: Record<string, string> };
  spec: Record<string, unknown>;
}

/** A Telemetry as read back: only what the keeper looks at is typed. */
export interface StoredTelemetry {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: unknown;
}

export interface RenderedTelemetry {
  object: TelemetryObject;
  tags: TagExpression[];
  vpsCount: number;
  /** A digest of the mapping (address → name, country); equal digests mean equal objects. */
  digest: string;
  /** The source identity overrides: not asked for, written, or refused (the fleet too large for one expression). */
  sourceIdentity: { state: 'off' } | { state: 'on' } | { state: 'refused'; reason: string };
}

export function fleetDigest(fleet: readonly MappedVps[]): string {
  const lines = fleet.map((v) => `${v.address}\t${v.name}\t${v.country}`).sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16);
}

/** `unmapped`: registered VPSs left out of this mapping because the whole fleet would not fit (fit-mapping.ts). */
export function renderTelemetry(options: TelemetryOptions, fleet: readonly MappedVps[], unmapped = 0): RenderedTelemetry {
  const tags = [
    ...renderTagExpressions(options.vpsTag, fleet, (v) => v.name, options.maxExpressionCodepoints),
    ...renderTagExpressions(options.countryTag, fleet, (v) => v.country, options.maxExpressionCodepoints),
  ];
  const identity = options.sourceIdentity === undefined ? undefined : renderSourceIdentity(options.sourceIdentity, fleet, options.maxExpressionCodepoints);
  if (identity?.state === 'on') tags.push(...identity.tags);
  const tagOverrides = Object.fromEntries(tags.map((t) => [t.tag, { value: t.expression }]));
  const digest = fleetDigest(fleet);
  const object: TelemetryObject = {
    apiVersion: TELEMETRY_API_VERSION,
    kind: 'Telemetry',
    metadata: {
      name: options.name,
      namespace: options.namespace,
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, 'app.kubernetes.io/part-of': 'edge-registrar' },
      annotations: { [VPS_COUNT_ANNOTATION]: String(fleet.length), [FLEET_DIGEST_ANNOTATION]: digest, [UNMAPPED_ANNOTATION]: String(unmapped) },
    },
    spec: {
      ...(options.targetRefs.length > 0 ? { targetRefs: options.targetRefs } : { selector: { matchLabels: options.selector } }),
      metrics: [
        {
          providers: [{ name: options.provider }],
          overrides: options.metrics.map((metric) => ({ match: { metric, mode: 'CLIENT' }, tagOverrides })),
        },
      ],
    },
  };
  const sourceIdentity = identity === undefined ? ({ state: 'off' } as const) : identity.state === 'on' ? ({ state: 'on' } as const) : identity;
  return { object, tags, vpsCount: fleet.length, digest, sourceIdentity };
}

/** Whether an existing Telemetry is ours to change: only one that carries our managed-by label. */
export function isManagedTelemetry(existing: StoredTelemetry): boolean {
  return existing.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE;
}
