/**
 * How edge-registrar marks what it owns. Istio's own auto-registration uses
 * istio.io/autoRegistrationGroup and istio.io/workloadController; ours are distinct so
 * neither ever claims the other's entries.
 */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'edge-registrar';
/** The label selector (and the words in a denial) for what edge-registrar manages. */
export const MANAGED_SELECTOR = `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`;
export const ANNOTATION_PREFIX = 'edge-registrar.io/';
export const VPS_ID_ANNOTATION = 'edge-registrar.io/vps-id';
export const STREAM_ID_ANNOTATION = 'edge-registrar.io/stream-id';
export const BREAK_GLASS_ANNOTATION = 'edge-registrar.io/break-glass';
/**
 * The sync daemon's leadership term a write comes from:
 * `<holderIdentity>@<leaseTransitions>@<acquireTime in ms>` of the sync Lease when the writer
 * held it. The webhook refuses a write whose term is not the Lease's now (a deposed leader's
 * late write). acquireTime makes each acquisition a term of its own: a holder that lapsed and
 * took the Lease back keeps its identity and (by the Lease's own rule) its leaseTransitions.
 */
export const LEADER_ANNOTATION = 'edge-registrar.io/leader';

/** A leadership term as the Lease shows it; acquireTime as the API returns it (a Date from client-node, a string in JSON). */
export function leaderToken(holderIdentity: string, leaseTransitions: number, acquireTime?: unknown): string {
  const acquired = acquireTime instanceof Date ? acquireTime.getTime() : typeof acquireTime === 'string' ? Date.parse(acquireTime) : Number.NaN;
  return Number.isFinite(acquired) ? `${holderIdentity}@${leaseTransitions}@${acquired}` : `${holderIdentity}@${leaseTransitions}`;
}

export const ISTIO_AUTO_REGISTRATION_ANNOTATION = 'istio.io/autoRegistrationGroup';
export const ISTIO_WORKLOAD_CONTROLLER_ANNOTATION = 'istio.io/workloadController';

export const TLS_MODE_LABEL = 'security.istio.io/tlsMode';
export const CANONICAL_NAME_LABEL = 'service.istio.io/canonical-name';
export const CANONICAL_REVISION_LABEL = 'service.istio.io/canonical-revision';

/** Istio-reserved labels our own rules put on an entry; every other Istio-domain label is refused. */
export const ISTIO_LABELS_WE_REQUIRE: ReadonlySet<string> = new Set([
  TLS_MODE_LABEL,
  CANONICAL_NAME_LABEL,
  CANONICAL_REVISION_LABEL,
]);

/** Istio owns istio.io and every subdomain of it (security.istio.io, topology.istio.io, ...). */
export function isIstioReservedKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return false;
  const prefix = key.slice(0, slash);
  return prefix === 'istio.io' || prefix.endsWith('.istio.io');
}

export function isManaged(labels: unknown): boolean {
  return (
    labels !== null &&
    typeof labels === 'object' &&
    (labels as Record<string, unknown>)[MANAGED_BY_LABEL] === MANAGED_BY_VALUE
  );
}
