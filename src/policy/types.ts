/**
 * The shapes the rules work on. A WorkloadEntry arrives as untrusted JSON (from an
 * AdmissionReview, a file or a stream event), so every field is optional and typed as
 * unknown until a rule has looked at it.
 */

export type Labels = Record<string, string>;

export interface ObjectMeta {
  name?: unknown;
  generateName?: unknown;
  namespace?: unknown;
  labels?: unknown;
  annotations?: unknown;
  deletionTimestamp?: unknown;
  [key: string]: unknown;
}

export interface WorkloadEntrySpec {
  address?: unknown;
  ports?: unknown;
  labels?: unknown;
  network?: unknown;
  locality?: unknown;
  weight?: unknown;
  serviceAccount?: unknown;
  [key: string]: unknown;
}

export interface WorkloadEntry {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: ObjectMeta;
  spec?: WorkloadEntrySpec;
  [key: string]: unknown;
}

/** One broken rule: what, where, the value found and what would be accepted. */
export interface Violation {
  rule: RuleId;
  /** Field path as kubectl users write it, e.g. `spec.labels["country"]`. */
  path: string;
  /** The offending value (undefined when the field is missing). */
  value: unknown;
  /** What would be accepted, in words. */
  expected: string;
  /** Why this value is wrong, in words; the full sentence is built by `describeViolation`. */
  problem: string;
}

/** A soft finding: reported (kubectl prints admission warnings) but not blocking. */
export interface Warning {
  rule: RuleId;
  path: string;
  message: string;
}

/** A rule that could not be evaluated because it needs state the caller did not provide. */
export interface Skipped {
  rule: RuleId;
  reason: string;
}

export interface Verdict {
  violations: Violation[];
  warnings: Warning[];
  skipped: Skipped[];
}

export const RULES = {
  'schema': 'the object has the shape of an Istio WorkloadEntry',
  'address.required': 'spec.address is set',
  'address.ip-literal': 'spec.address is a bare IP literal (no hostname, port, prefix or unix socket)',
  'address.public-unicast': 'spec.address is a public unicast address',
  'address.allowed-cidrs': "spec.address is inside the policy's allowed CIDRs",
  'address.denied-cidrs': "spec.address is outside the policy's denied CIDRs",
  'address.canonical': 'spec.address is written in canonical form',
  'address.unique': 'no other WorkloadEntry in the namespace has the same address',
  'labels.syntax': 'label keys and values are valid Kubernetes labels',
  'labels.conflict': 'metadata.labels and spec.labels agree where both set a key',
  'labels.required': 'the labels the policy requires are present',
  'labels.app': 'the app label has the configured value',
  'labels.country': 'the country label is a lower-case ISO 3166-1 alpha-2 code',
  'labels.version': 'a version label is present',
  'labels.istio-reserved': 'no Istio-reserved labels other than those the rules require',
  'labels.tls-mode': 'spec.labels carries security.istio.io/tlsMode: disabled',
  'labels.service-selected': 'no Kubernetes Service in the namespace selects the entry',
  'name.pattern': "metadata.name matches the policy's name pattern and agrees with the country label",
  'serviceAccount.value': 'spec.serviceAccount is the configured one',
  'serviceAccount.exists': 'spec.serviceAccount exists in the namespace',
  'ports.forbidden': 'spec.ports is empty (a VPS entry is a traffic source only)',
  'weight.zero': 'spec.weight is absent or non-zero',
  'network.allowed': "spec.network is unset or one of the policy's networks",
  'ownership.managed': 'managed entries are written only by the sync daemon',
  'ownership.stream-order': "the sync daemon never replaces an entry's state with one from an older stream event",
  'ownership.leader': 'the sync daemon writes only from the leadership term the sync Lease shows now (a deposed leader\'s late write is refused)',
  'ownership.break-glass': "break-glass writes to managed entries are recorded, and leave the sync daemon's stream-id annotation as it is",
} as const;

export type RuleId = keyof typeof RULES;

/**
 * The rules that judge an entry's content alone (no other object, no requester): what
 * `evaluateEntry` can find without a view of the namespace, and so what the sync daemon's
 * planner can refuse an event for before it writes.
 */
export const CONTENT_RULES = [
  'schema',
  'address.required',
  'address.ip-literal',
  'address.public-unicast',
  'address.allowed-cidrs',
  'address.denied-cidrs',
  'labels.syntax',
  'labels.conflict',
  'labels.required',
  'labels.app',
  'labels.country',
  'labels.istio-reserved',
  'labels.tls-mode',
  'name.pattern',
  'serviceAccount.value',
  'ports.forbidden',
  'weight.zero',
  'network.allowed',
] as const satisfies readonly RuleId[];

export type ContentRuleId = (typeof CONTENT_RULES)[number];
