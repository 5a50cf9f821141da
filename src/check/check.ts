/**
 * The offline check: the same rules the webhook enforces, over manifests from files.
 * Like the API server, it judges each entry after the webhook's defaulting, so a file the
 * cluster would accept passes; what defaulting would change is reported as a warning.
 * Uniqueness is checked across the given files (and the cluster's entries with a view);
 * rules that need the cluster are reported as skipped without one.
 */
import jsonPatch from 'fast-json-patch';
import { evaluateEntry } from '../policy/evaluate.ts';
import { describeViolation } from '../policy/describe.ts';
import { applyDefaults } from '../policy/mutate.ts';
import type { Policy } from '../policy/policy-file.ts';
import { ClusterIndex } from '../kube/cluster-index.ts';
import type { ManifestDocument } from './documents.ts';

export const SERVED_VERSIONS = ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'];

export interface CheckFinding {
  file: string;
  ref: string;
  rule: string;
  message: string;
}

export interface CheckReport {
  entries: number;
  violations: CheckFinding[];
  warnings: CheckFinding[];
  /** Rules not evaluated, with why: once per rule. */
  skipped: Map<string, string>;
}

function refOf(doc: ManifestDocument): string {
  const kind = typeof doc.object.kind === 'string' ? doc.object.kind : '(no kind)';
  const name = (doc.object.metadata as { name?: unknown } | undefined)?.name;
  return `${kind}/${typeof name === 'string' && name !== '' ? name : `(document ${doc.index})`}`;
}

function namespaceOf(doc: ManifestDocument, fallback: string): string {
  const ns = (doc.object.metadata as { namespace?: unknown } | undefined)?.namespace;
  return typeof ns === 'string' && ns !== '' ? ns : fallback;
}

export interface CheckInput {
  documents: readonly ManifestDocument[];
  policy: Policy;
  namespace: string;
  /** The cluster's state (from --kubeconfig); file objects are laid over it. */
  cluster?: ClusterIndex;
}

export function checkManifests({ documents, policy, namespace, cluster }: CheckInput): CheckReport {
  const report: CheckReport = { entries: 0, violations: [], warnings: [], skipped: new Map() };
  const index = cluster ?? new ClusterIndex(namespace);
  const entries = documents.filter((d) => d.object.kind === 'WorkloadEntry');

  // Entries from files replace the cluster's entries of the same name; uniqueness then
  // compares every file entry with every other and with the rest of the cluster.
  const namespaces = new Set(entries.map((d) => namespaceOf(d, namespace)));
  for (const ns of namespaces) if (cluster === undefined) index.markLoaded('WorkloadEntry', ns);
  const defaulted = new Map<ManifestDocument, unknown>();
  for (const doc of entries) {
    const object = applyDefaults(doc.object, policy) as Record<string, unknown>;
    defaulted.set(doc, object);
    const meta = (object.metadata ?? {}) as Record<string, unknown>;
    index.upsert('WorkloadEntry', { ...object, metadata: { ...meta, namespace: namespaceOf(doc, namespace) } });
  }

  for (const doc of entries) {
    const object = defaulted.get(doc);
    report.entries++;
    const ref = refOf(doc);
    const apiVersion = doc.object.apiVersion;
    if (typeof apiVersion !== 'string' || !SERVED_VERSIONS.includes(apiVersion)) {
      report.violations.push({
        file: doc.file,
        ref,
        rule: 'schema',
        message: `apiVersion: ${JSON.stringify(apiVersion)} is not served for WorkloadEntry; expected one of ${SERVED_VERSIONS.join(', ')}`,
      });
    }
    if (object !== null && typeof object === 'object' && object !== doc.object) {
      const changes = jsonPatch.compare(doc.object, object).map((op) => ('value' in op ? `${op.path}=${JSON.stringify(op.value)}` : op.path));
      if (changes.length > 0) report.warnings.push({ file: doc.file, ref, rule: 'defaults', message: `the webhook will set ${changes.join(', ')}` });
    }
    const verdict = evaluateEntry(object, { policy, namespace: namespaceOf(doc, namespace), view: index });
    for (const v of verdict.violations) report.violations.push({ file: doc.file, ref, rule: v.rule, message: describeViolation(v).replace(/^\[[^\]]+\] /, '') });
    for (const w of verdict.warnings) report.warnings.push({ file: doc.file, ref, rule: w.rule, message: `${w.path}: ${w.message}` });
    for (const s of verdict.skipped) if (!report.skipped.has(s.rule)) report.skipped.set(s.rule, s.reason);
  }
  return report;
}

export function formatFinding(f: CheckFinding): string {
  return `${f.file}: ${f.ref}: ${f.rule}: ${f.message}`;
}
