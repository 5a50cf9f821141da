/**
 * Defaulting: what makes a kubectl user's entry right without surprises. Only fields that
 * are missing are filled in, and only the address is rewritten (to its canonical form,
 * which is the same address). A value the user set but that breaks a rule is left alone
 * for validation to report, so the user sees why rather than a silent change.
 */
import { nonPublicReason, parseAddress } from './address.ts';
import { CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, TLS_MODE_LABEL } from './markers.ts';
import type { Policy } from './policy-file.ts';
import type { WorkloadEntry } from './types.ts';

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/** Returns a defaulted copy; the input is never modified. Malformed input comes back unchanged. */
export function applyDefaults(entry: unknown, policy: Policy): unknown {
  if (!isPlainObject(entry) || !isPlainObject(entry.spec)) return entry;
  const metadata = entry.metadata;
  const metaLabels = isPlainObject(metadata) && isPlainObject(metadata.labels) ? metadata.labels : {};
  const specLabelsRaw = entry.spec.labels;
  if (specLabelsRaw !== undefined && specLabelsRaw !== null && !isPlainObject(specLabelsRaw)) return entry;

  const out = structuredClone(entry) as WorkloadEntry & { spec: Record<string, unknown> };
  const spec = out.spec;
  const labels: Record<string, unknown> = isPlainObject(spec.labels) ? spec.labels : {};

  if (spec.serviceAccount === undefined || spec.serviceAccount === '') spec.serviceAccount = policy.serviceAccount;

  // Istio selects on the merged labels, but tools and people read spec.labels: mirror the
  // labels the rules are about from metadata.labels when spec.labels lacks them.
  for (const key of new Set([...policy.requiredLabels, 'version'])) {
    const fromMeta = metaLabels[key];
    if (labels[key] === undefined && typeof fromMeta === 'string') labels[key] = fromMeta;
  }
  if (labels[TLS_MODE_LABEL] === undefined && metaLabels[TLS_MODE_LABEL] === undefined) labels[TLS_MODE_LABEL] = 'disabled';
  if (labels.version === undefined) labels.version = policy.version;
  const app = labels.app ?? metaLabels.app;
  if (labels[CANONICAL_NAME_LABEL] === undefined && metaLabels[CANONICAL_NAME_LABEL] === undefined && typeof app === 'string') {
    labels[CANONICAL_NAME_LABEL] = app;
  }
  if (labels[CANONICAL_REVISION_LABEL] === undefined && metaLabels[CANONICAL_REVISION_LABEL] === undefined && typeof labels.version === 'string') {
    labels[CANONICAL_REVISION_LABEL] = labels.version;
  }
  spec.labels = labels;

  // Canonicalise only an address that will pass: a rejected one is reported as written.
  if (typeof spec.address === 'string') {
    const parsed = parseAddress(spec.address);
    if (parsed.ok && nonPublicReason(parsed.ip) === undefined) spec.address = parsed.canonical;
  }
  return out;
}
