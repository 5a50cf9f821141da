/**
 * Kubernetes label syntax and the label set Istio actually uses. Istio merges
 * metadata.labels over spec.labels (metadata wins) before selecting or attributing an
 * entry, so the rules judge that merged set and report keys where the two disagree.
 */
import type { Labels } from './types.ts';

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why a label key is invalid, or undefined when it is valid. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined) {
    if (prefix.length === 0) return 'has an empty prefix before "/"';
    if (prefix.length > 253) return 'has a prefix longer than 253 characters';
    if (!DNS_SUBDOMAIN.test(prefix)) return 'has a prefix that is not a lower-case DNS subdomain';
  }
  if (name.length === 0) return 'has an empty name';
  if (name.length > 63) return 'has a name longer than 63 characters';
  if (!NAME.test(name)) return 'has a name that is not alphanumeric with "-", "_" or "." inside';
  return undefined;
}

/** Why a label value is invalid, or undefined when it is valid. */
export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63) return 'is longer than 63 characters';
  if (value.length > 0 && !NAME.test(value)) return 'is not alphanumeric with "-", "_" or "." inside';
  return undefined;
}

/** The string-valued entries of a labels field; non-object or non-string values are left to the schema rule. */
export function stringLabels(value: unknown): Labels {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return {};
  const out: Labels = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The labels Istio uses for an entry: spec.labels overlaid by metadata.labels. */
export function effectiveLabels(metadataLabels: Labels, specLabels: Labels): Labels {
  return { ...specLabels, ...metadataLabels };
}

/** Does a Service selector pick these labels? An empty selector selects nothing (Kubernetes semantics). */
export function selectorMatches(selector: Labels, labels: Labels): boolean {
  const keys = Object.keys(selector);
  return keys.length > 0 && keys.every((k) => labels[k] === selector[k]);
}

export function formatLabels(labels: Labels): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
