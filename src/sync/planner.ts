/**
 * From an event to the WorkloadEntry that should exist: exactly the fleet's shape (name,
 * namespace, app, version, country, serviceAccount, address) plus what the rules require,
 * edge-registrar's ownership markers and the stream id that produced this state. The entry
 * is checked against the same rules the webhook enforces before anything is written, so a
 * bad event is dead-lettered with the rule's words instead of looping on denials.
 */
import { parseAddress } from '../policy/address.ts';
import { describeViolation } from '../policy/describe.ts';
import { evaluateEntry } from '../policy/evaluate.ts';
import {
  CANONICAL_NAME_LABEL,
  CANONICAL_REVISION_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  STREAM_ID_ANNOTATION,
  TLS_MODE_LABEL,
  VPS_ID_ANNOTATION,
} from '../policy/markers.ts';
import type { Policy } from '../policy/policy-file.ts';
import { CONTENT_RULES, type ContentRuleId } from '../policy/types.ts';
import type { RegisterEvent } from './event.ts';

export const OCCURRED_AT_ANNOTATION = 'edge-registrar.io/occurred-at';

/** Labels an event's extra labels may not set: the rules and the markers own them. */
const RESERVED_EXTRA_LABELS = new Set(['app', 'country', 'version', MANAGED_BY_LABEL, TLS_MODE_LABEL, CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL]);

export interface ManagedEntry {
  apiVersion: string;
  kind: 'WorkloadEntry';
  metadata: { name: string; namespace: string; labels: Record<string, string>; annotations: Record<string, string> };
  spec: { address: string; labels: Record<string, string>; serviceAccount: string };
}

export type Plan = { ok: true; entry: ManagedEntry } | { ok: false; rule: ContentRuleId | 'event.labels'; reason: string };

export interface PlanContext {
  policy: Policy;
  namespace: string;
  istioApiVersion: string;
}

export function planRegister(event: RegisterEvent, streamId: string, ctx: PlanContext): Plan {
  const { policy, namespace } = ctx;
  for (const key of Object.keys(event.labels ?? {})) {
    if (RESERVED_EXTRA_LABELS.has(key)) {
      return { ok: false, rule: 'event.labels', reason: describeViolation({ rule: 'event.labels', path: 'labels', value: key, problem: 'is a label edge-registrar sets itself', expected: "extra labels other than app, country, version, Istio's and the managed-by marker" }) };
    }
  }
  const parsed = parseAddress(event.address);
  const address = parsed.ok ? parsed.canonical : event.address;
  const annotations: Record<string, string> = { [VPS_ID_ANNOTATION]: event.vps_id, [STREAM_ID_ANNOTATION]: streamId };
  if (event.occurred_at !== undefined) annotations[OCCURRED_AT_ANNOTATION] = event.occurred_at;
  const entry: ManagedEntry = {
    apiVersion: `networking.istio.io/${ctx.istioApiVersion}`,
    kind: 'WorkloadEntry',
    metadata: {
      name: event.name,
      namespace,
      labels: { app: policy.app, country: event.country, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      annotations,
    },
    spec: {
      address,
      labels: {
        ...event.labels,
        app: policy.app,
        version: policy.version,
        country: event.country,
        [TLS_MODE_LABEL]: 'disabled',
        [CANONICAL_NAME_LABEL]: policy.app,
        [CANONICAL_REVISION_LABEL]: policy.version,
      },
      serviceAccount: policy.serviceAccount,
    },
  };
  // The cluster rules (uniqueness against unmanaged entries, Service selection, the
  // serviceAccount's existence) are the webhook's to judge at write time.
  const verdict = evaluateEntry(entry, { policy, namespace });
  const [first] = verdict.violations;
  if (first !== undefined) {
    // Without a view of the namespace only content rules can be broken (policy/types.ts).
    if (!(CONTENT_RULES as readonly string[]).includes(first.rule)) throw new Error(`planRegister: rule ${first.rule} is not a content rule`);
    return { ok: false, rule: first.rule as ContentRuleId, reason: verdict.violations.map(describeViolation).join('; ') };
  }
  return { ok: true, entry };
}
