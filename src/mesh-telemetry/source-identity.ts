/**
 * The source identity overrides (off by default): for requests the ingress gateway forwards
 * from a registered VPS, Istio's own source tags name the VPS's WorkloadEntry instead of the
 * gateway, so Kiali draws each VPS → Xboard.
 *
 * Why at the gateway, in mode CLIENT, and not on Xboard's sidecars in mode SERVER: Kiali's
 * namespace graph (kiali/kiali graph/telemetry/istio/istio.go, buildNamespaceTrafficMap) reads
 * `reporter="destination"` series only for `source_workload="unknown"`; every known source comes
 * from `reporter="source"` series, which for gateway traffic the gateway reports. So only the
 * gateway's tags change what Kiali draws (docs/attribution.md).
 *
 * Every other request keeps the value the gateway's istio.stats filter gives the tag itself
 * (in mode CLIENT, from the proxy's node metadata: WORKLOAD_NAME, NAMESPACE and its LABELS;
 * istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc, populatePeerInfo),
 * read in CEL from the same `node` attribute that filter exposes. A standard tag cannot be split
 * across tags, so each expression holds the whole fleet; a fleet too large for one is refused
 * (the VPS tags stay) rather than written where Envoy would drop it. Pure: no I/O.
 */
import { celString, renderSingleExpression, TagRenderError, type MappedVps, type TagExpression } from './tag-expressions.ts';

/** What a registered VPS is in the mesh: its entry's namespace, and the app and version labels the entries carry. */
export interface SourceIdentity {
  namespace: string;
  app: string;
  version: string;
}

/** The gateway's own value for a node metadata key, as the stats filter reads it ('' when absent). */
function nodeValue(key: string): string {
  const k = celString(key);
  return `${k} in node.metadata?node.metadata[${k}]:''`;
}

/** The gateway's own value for one of its pod labels, as the stats filter reads it ('' when absent). */
function nodeLabel(label: string): string {
  const l = celString(label);
  return `'LABELS' in node.metadata&&${l} in node.metadata['LABELS']?node.metadata['LABELS'][${l}]:''`;
}

/** Istio's source tags: what a registered VPS gives each, and what every other request keeps. */
const SOURCE_TAGS: readonly { tag: string; vps: (vps: MappedVps, identity: SourceIdentity) => string; otherwise: string }[] = [
  { tag: 'source_workload', vps: (v) => v.name, otherwise: nodeValue('WORKLOAD_NAME') },
  { tag: 'source_workload_namespace', vps: (_v, i) => i.namespace, otherwise: nodeValue('NAMESPACE') },
  { tag: 'source_app', vps: (_v, i) => i.app, otherwise: nodeLabel('app') },
  { tag: 'source_version', vps: (_v, i) => i.version, otherwise: nodeLabel('version') },
  { tag: 'source_canonical_service', vps: (_v, i) => i.app, otherwise: nodeLabel('service.istio.io/canonical-name') },
  { tag: 'source_canonical_revision', vps: (_v, i) => i.version, otherwise: nodeLabel('service.istio.io/canonical-revision') },
];

export const SOURCE_IDENTITY_TAGS = SOURCE_TAGS.map((t) => t.tag);

export type SourceIdentityRender = { state: 'on'; tags: TagExpression[] } | { state: 'refused'; reason: string };

export function renderSourceIdentity(identity: SourceIdentity, fleet: readonly MappedVps[], maxCodepoints: number): SourceIdentityRender {
  try {
    return { state: 'on', tags: SOURCE_TAGS.map((t) => renderSingleExpression(t.tag, fleet, (v) => t.vps(v, identity), t.otherwise, maxCodepoints)) };
  } catch (error) {
    if (error instanceof TagRenderError) return { state: 'refused', reason: error.message };
    throw error;
  }
}
