/**
 * The content rules for a WorkloadEntry: pure functions from an object (untrusted JSON),
 * the policy and an optional view of the namespace to a verdict. The webhook, the offline
 * check and the sync daemon all call `evaluateEntry`, so a rule exists in one place.
 */
import { cidrContains, nonPublicReason, parseAddress } from './address.ts';
import type { ClusterView } from './cluster-view.ts';
import { countryProblem } from './countries.ts';
import {
  effectiveLabels,
  formatLabels,
  labelKeyProblem,
  labelValueProblem,
  stringLabels,
} from './labels.ts';
import {
  CANONICAL_NAME_LABEL,
  CANONICAL_REVISION_LABEL,
  ISTIO_LABELS_WE_REQUIRE,
  TLS_MODE_LABEL,
  isIstioReservedKey,
} from './markers.ts';
import { matchName } from './name-pattern.ts';
import type { Policy } from './policy-file.ts';
import type { Labels, RuleId, Skipped, Verdict, Violation, Warning } from './types.ts';

export interface EvaluationContext {
  policy: Policy;
  /** The namespace the entry lives in (from the request, the file or the configuration). */
  namespace: string;
  /** State of the namespace; without it the cluster rules are reported as skipped. */
  view?: ClusterView | undefined;
}

/** Collects findings while the rules run. */
class Findings {
  readonly violations: Violation[] = [];
  readonly warnings: Warning[] = [];
  readonly skipped: Skipped[] = [];

  violate(rule: RuleId, path: string, value: unknown, problem: string, expected: string): void {
    this.violations.push({ rule, path, value, problem, expected });
  }
  warn(rule: RuleId, path: string, message: string): void {
    this.warnings.push({ rule, path, message });
  }
  skip(rule: RuleId, reason: string): void {
    this.skipped.push({ rule, reason });
  }
  verdict(): Verdict {
    return { violations: this.violations, warnings: this.warnings, skipped: this.skipped };
  }
}

const labelPath = (field: string, key: string): string => `${field}[${JSON.stringify(key)}]`;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Shape checks; a field with the wrong type is reported once here and ignored by the other rules. */
function checkSchema(entry: unknown, f: Findings): { metadata: Record<string, unknown>; spec: Record<string, unknown> } | undefined {
  if (!isPlainObject(entry)) {
    f.violate('schema', '(root)', entry, 'is not an object', 'a WorkloadEntry object');
    return undefined;
  }
  const metadata = entry.metadata ?? {};
  const spec = entry.spec;
  if (!isPlainObject(metadata)) {
    f.violate('schema', 'metadata', metadata, 'is not an object', 'an object');
    return undefined;
  }
  if (!isPlainObject(spec)) {
    f.violate('schema', 'spec', spec, spec === undefined ? 'is missing' : 'is not an object', 'an object with at least spec.address');
    return undefined;
  }
  const expectString = (path: string, value: unknown): void => {
    if (value !== undefined && typeof value !== 'string') f.violate('schema', path, value, 'is not a string', 'a string');
  };
  const expectLabelMap = (path: string, value: unknown): void => {
    if (value === undefined || value === null) return;
    if (!isPlainObject(value)) {
      f.violate('schema', path, value, 'is not a map of strings', 'a map of label keys to string values');
      return;
    }
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== 'string') f.violate('schema', labelPath(path, k), v, 'is not a string', 'a string label value');
    }
  };
  expectString('metadata.name', metadata.name);
  expectLabelMap('metadata.labels', metadata.labels);
  expectString('spec.address', spec.address);
  expectString('spec.serviceAccount', spec.serviceAccount);
  expectString('spec.network', spec.network);
  expectString('spec.locality', spec.locality);
  expectLabelMap('spec.labels', spec.labels);
  if (spec.weight !== undefined && spec.weight !== null && !(Number.isInteger(spec.weight) && (spec.weight as number) >= 0)) {
    f.violate('schema', 'spec.weight', spec.weight, 'is not a non-negative integer', 'a positive integer or no weight');
  }
  if (spec.ports !== undefined && spec.ports !== null && !isPlainObject(spec.ports)) {
    f.violate('schema', 'spec.ports', spec.ports, 'is not a map of port names to numbers', 'no ports');
  }
  return { metadata, spec };
}

function checkAddress(spec: Record<string, unknown>, ctx: EvaluationContext, f: Findings): string | undefined {
  const value = spec.address;
  const expected = 'a public unicast IPv4 or IPv6 address, e.g. 103.21.244.10';
  if (value === undefined || value === null || value === '') {
    f.violate('address.required', 'spec.address', value, 'is missing', expected);
    return undefined;
  }
  if (typeof value !== 'string') return undefined;
  const parsed = parseAddress(value);
  if (!parsed.ok) {
    f.violate('address.ip-literal', 'spec.address', value, parsed.problem, expected);
    return undefined;
  }
  const reason = nonPublicReason(parsed.ip);
  if (reason !== undefined) {
    const mapped = value !== parsed.canonical && parsed.family === 4 && value.includes(':') ? ` (IPv4-mapped form of ${parsed.canonical})` : '';
    f.violate('address.public-unicast', 'spec.address', value, `${reason}${mapped}`, expected);
  }
  const { allowCidrs, denyCidrs } = ctx.policy.address;
  if (allowCidrs.length > 0 && !allowCidrs.some((c) => cidrContains(c, parsed.ip))) {
    f.violate('address.allowed-cidrs', 'spec.address', value, 'is outside every allowed CIDR', `an address inside ${allowCidrs.join(', ')}`);
  }
  const denied = denyCidrs.find((c) => cidrContains(c, parsed.ip));
  if (denied !== undefined) {
    f.violate('address.denied-cidrs', 'spec.address', value, `is inside the denied CIDR ${denied}`, 'an address outside the denied CIDRs');
  }
  if (value !== parsed.canonical) {
    f.warn('address.canonical', 'spec.address', `"${value}" is stored as "${parsed.canonical}" (canonical form)`);
  }
  return parsed.canonical;
}

function checkLabelSyntax(field: string, raw: unknown, f: Findings): void {
  for (const [key, value] of Object.entries(stringLabels(raw))) {
    const keyProblem = labelKeyProblem(key);
    if (keyProblem !== undefined) {
      f.violate('labels.syntax', field, key, `label key ${keyProblem}`, 'a key like "country" or "example.com/tier" (name ≤ 63 chars)');
    }
    const valueProblem = labelValueProblem(value);
    if (valueProblem !== undefined) {
      f.violate('labels.syntax', labelPath(field, key), value, valueProblem, 'at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric');
    }
  }
}

function checkLabels(
  metadata: Record<string, unknown>,
  spec: Record<string, unknown>,
  ctx: EvaluationContext,
  f: Findings,
): Labels {
  checkLabelSyntax('metadata.labels', metadata.labels, f);
  checkLabelSyntax('spec.labels', spec.labels, f);
  const metaLabels = stringLabels(metadata.labels);
  const specLabels = stringLabels(spec.labels);
  const labels = effectiveLabels(metaLabels, specLabels);
  const { policy } = ctx;

  for (const [key, metaValue] of Object.entries(metaLabels)) {
    const specValue = specLabels[key];
    if (specValue !== undefined && specValue !== metaValue) {
      f.violate(
        'labels.conflict',
        labelPath('spec.labels', key),
        specValue,
        `disagrees with metadata.labels["${key}"]="${metaValue}", which Istio lets win`,
        `the same value in both, or the key in one place only`,
      );
    }
  }
  // The label path reported is where a user would fix it: spec.labels, which Istio selects on.
  const where = (key: string): string => labelPath(key in specLabels || !(key in metaLabels) ? 'spec.labels' : 'metadata.labels', key);

  for (const key of policy.requiredLabels) {
    if (labels[key] === undefined) {
      f.violate('labels.required', labelPath('spec.labels', key), undefined, 'is missing', `the label "${key}" (required by the policy)`);
    }
  }
  const app = labels.app;
  if (app !== undefined && app !== policy.app) {
    f.violate('labels.app', where('app'), app, 'is not the configured app', `"${policy.app}"`);
  }
  const country = labels.country;
  if (country !== undefined) {
    const problem = countryProblem(country);
    if (problem !== undefined) f.violate('labels.country', where('country'), country, problem, 'a lower-case ISO 3166-1 alpha-2 code such as "jp", "hk" or "us"');
  }
  if (labels.version === undefined) {
    f.warn('labels.version', 'spec.labels["version"]', `no version label: Istio reports the version as "latest"; "${policy.version}" is the default`);
  }
  for (const key of Object.keys(labels)) {
    if (isIstioReservedKey(key) && !ISTIO_LABELS_WE_REQUIRE.has(key)) {
      f.violate('labels.istio-reserved', where(key), key, 'is an Istio-reserved label that Istio sets itself', `no labels under istio.io other than ${[...ISTIO_LABELS_WE_REQUIRE].join(', ')}`);
    }
  }
  const tlsMode = labels[TLS_MODE_LABEL];
  if (tlsMode !== 'disabled') {
    f.violate(
      'labels.tls-mode',
      labelPath('spec.labels', TLS_MODE_LABEL),
      tlsMode,
      tlsMode === undefined
        ? 'is missing, so Istio would send mTLS to a VPS that has no sidecar'
        : 'would make Istio send mTLS to a VPS that has no sidecar',
      '"disabled"',
    );
  }
  if (labels[CANONICAL_NAME_LABEL] === undefined || labels[CANONICAL_REVISION_LABEL] === undefined) {
    f.warn('labels.version', 'spec.labels', `no ${CANONICAL_NAME_LABEL}/${CANONICAL_REVISION_LABEL}: Istio metrics fall back to app/version`);
  }
  return labels;
}

function checkName(metadata: Record<string, unknown>, labels: Labels, ctx: EvaluationContext, f: Findings): void {
  const name = metadata.name;
  if (typeof name !== 'string' || name === '') return; // generateName: the API server names it after mutation
  const match = matchName(ctx.policy.namePattern, name);
  if (!match.matched) {
    f.violate('name.pattern', 'metadata.name', name, `does not match ${ctx.policy.namePattern}`, 'a name like "vps-jp-01"');
    return;
  }
  const nameCountry = match.country;
  const country = labels.country;
  if (nameCountry !== undefined && country !== undefined && nameCountry !== country) {
    // The suggestion is a name the pattern accepts: country codes are lower case there.
    f.violate('name.pattern', 'metadata.name', name, `says country "${nameCountry}" but the country label is "${country}"`, `a name starting "vps-${country.toLowerCase()}-" or country label "${nameCountry}"`);
  }
}

function checkSpecFields(spec: Record<string, unknown>, ctx: EvaluationContext, f: Findings): void {
  const { policy } = ctx;
  const sa = spec.serviceAccount;
  if (typeof sa === 'string' && sa !== policy.serviceAccount) {
    f.violate('serviceAccount.value', 'spec.serviceAccount', sa, 'is not the configured serviceAccount', `"${policy.serviceAccount}"`);
  } else if (sa === undefined || sa === '') {
    f.violate('serviceAccount.value', 'spec.serviceAccount', sa, 'is missing', `"${policy.serviceAccount}"`);
  }
  if (!policy.ports.allowed && isPlainObject(spec.ports) && Object.keys(spec.ports).length > 0) {
    f.violate('ports.forbidden', 'spec.ports', spec.ports, 'is set, but a VPS entry is a traffic source, not a destination', 'no ports');
  }
  if (spec.weight === 0) {
    f.violate('weight.zero', 'spec.weight', 0, 'makes Istio use weight 1, so it does not drain the endpoint', 'no weight, or a positive weight; retire the VPS to remove it');
  }
  const network = spec.network;
  if (typeof network === 'string' && network !== '' && !policy.networks.includes(network)) {
    f.violate(
      'network.allowed',
      'spec.network',
      network,
      'is not an allowed network',
      policy.networks.length > 0 ? `one of ${policy.networks.map((n) => `"${n}"`).join(', ')} or unset` : 'unset',
    );
  }
}

function checkCluster(name: string | undefined, address: string | undefined, labels: Labels, spec: Record<string, unknown>, ctx: EvaluationContext, f: Findings): void {
  const { view, namespace, policy } = ctx;
  if (view === undefined) {
    f.skip('address.unique', 'no cluster state (give --kubeconfig)');
    f.skip('labels.service-selected', 'no cluster state (give --kubeconfig)');
    f.skip('serviceAccount.exists', 'no cluster state (give --kubeconfig)');
    return;
  }
  if (address !== undefined) {
    const others = view.entryNamesWithAddress(namespace, address);
    if (others === undefined) f.skip('address.unique', `WorkloadEntries of namespace ${namespace} are not known here (give --kubeconfig)`);
    else {
      const clash = others.filter((other) => other !== name);
      if (clash.length > 0) {
        f.violate('address.unique', 'spec.address', spec.address, `is already used by WorkloadEntry ${clash.map((c) => `${namespace}/${c}`).join(', ')}`, 'an address no other entry in the namespace has');
      }
    }
  }
  const services = view.servicesSelecting(namespace, labels);
  if (services === undefined) f.skip('labels.service-selected', `Services of namespace ${namespace} are not known here (give --kubeconfig)`);
  else {
    for (const service of services) {
      f.violate(
        'labels.service-selected',
        'spec.labels',
        formatLabels(labels),
        `are selected by Service ${namespace}/${service.name} (selector ${formatLabels(service.selector)}), so Istio would add this VPS to its endpoints`,
        `labels that no Service selector in ${namespace} matches`,
      );
    }
  }
  const sa = spec.serviceAccount;
  if (typeof sa === 'string' && sa === policy.serviceAccount) {
    const exists = view.serviceAccountExists(namespace, sa);
    if (exists === undefined) f.skip('serviceAccount.exists', `ServiceAccounts of namespace ${namespace} are not known here (give --kubeconfig)`);
    else if (!exists) {
      f.violate('serviceAccount.exists', 'spec.serviceAccount', sa, `does not exist in namespace ${namespace}`, `create ServiceAccount ${namespace}/${sa} first`);
    }
  }
}

export function evaluateEntry(entry: unknown, ctx: EvaluationContext): Verdict {
  const f = new Findings();
  const shape = checkSchema(entry, f);
  if (shape === undefined) return f.verdict();
  const { metadata, spec } = shape;
  const address = checkAddress(spec, ctx, f);
  const labels = checkLabels(metadata, spec, ctx, f);
  checkName(metadata, labels, ctx, f);
  checkSpecFields(spec, ctx, f);
  checkCluster(typeof metadata.name === 'string' ? metadata.name : undefined, address, labels, spec, ctx, f);
  return f.verdict();
}
