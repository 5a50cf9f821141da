/**
 * The mutate and validate handlers: pure functions from a decoded admission request, the
 * policy and a view of the namespace to an admission response plus an outcome for metrics
 * and logs. No I/O, no clock except the one passed in, so they are tested with tables.
 */
import jsonPatch from 'fast-json-patch';
import type { ClusterView } from '../policy/cluster-view.ts';
import { denialMessage, describeViolation, renderValue } from '../policy/describe.ts';
import { evaluateEntry } from '../policy/evaluate.ts';
import { BREAK_GLASS_ANNOTATION } from '../policy/markers.ts';
import { applyDefaults } from '../policy/mutate.ts';
import { decideOwnership, type OwnershipDecision } from '../policy/ownership.ts';
import type { Policy } from '../policy/policy-file.ts';
import { isFinalizerRemoval } from '../policy/terminating.ts';
import type { Violation } from '../policy/types.ts';
import { clampWarnings, type AdmissionRequest, type AdmissionResponse } from './admission.ts';

export interface HandlerContext {
  policy: Policy;
  /** The namespace edge-registrar guards; requests for others are allowed untouched. */
  namespace: string;
  view: ClusterView;
  now: () => Date;
  /** The sync daemon's Lease (in the guarded namespace): its term fences the daemon's writes. */
  syncLeaseName?: string;
}

export type Decision = 'allowed' | 'denied' | 'patched' | 'ignored';

export interface HandlerOutcome {
  response: AdmissionResponse;
  decision: Decision;
  violations: readonly Violation[];
  ownership?: OwnershipDecision['kind'];
}

function isWorkloadEntry(request: AdmissionRequest): boolean {
  return request.kind.group === 'networking.istio.io' && request.kind.kind === 'WorkloadEntry' && !request.subResource;
}

function namespaceOf(request: AdmissionRequest, fallback: string): string {
  const fromObject = (request.object ?? request.oldObject) as { metadata?: { namespace?: unknown } } | undefined;
  const ns = request.namespace ?? fromObject?.metadata?.namespace;
  return typeof ns === 'string' && ns !== '' ? ns : fallback;
}

function entryRef(request: AdmissionRequest, namespace: string): string {
  const obj = (request.object ?? request.oldObject) as { metadata?: { name?: unknown; generateName?: unknown } } | undefined;
  const name = request.name ?? obj?.metadata?.name;
  if (typeof name === 'string' && name !== '') return `${namespace}/${name}`;
  const generate = obj?.metadata?.generateName;
  return typeof generate === 'string' ? `${namespace}/${generate}*` : `${namespace}/(unnamed)`;
}

const allow = (request: AdmissionRequest, decision: Decision = 'allowed', extra: Partial<AdmissionResponse> = {}): HandlerOutcome => ({
  response: { uid: request.uid, allowed: true, ...extra },
  decision,
  violations: [],
});

/** Requests edge-registrar does not judge: other kinds, other namespaces, CONNECT. */
function outOfScope(request: AdmissionRequest, ctx: HandlerContext): boolean {
  return !isWorkloadEntry(request) || request.operation === 'CONNECT' || namespaceOf(request, ctx.namespace) !== ctx.namespace;
}

/**
 * A finalizer coming off an entry being deleted, by anyone (the garbage collector after
 * `--cascade=foreground`, say): decided before ownership, see policy/terminating.ts.
 */
function completesDeletion(request: AdmissionRequest): boolean {
  return isFinalizerRemoval(request.operation, request.object, request.oldObject);
}

function ownershipOf(request: AdmissionRequest, ctx: HandlerContext): OwnershipDecision {
  const leaseToken = ctx.syncLeaseName === undefined ? undefined : ctx.view.leaseToken?.(ctx.namespace, ctx.syncLeaseName);
  const leaseStaleness = ctx.syncLeaseName === undefined ? undefined : ctx.view.leaseStaleness?.(ctx.namespace, ctx.syncLeaseName);
  return decideOwnership({ operation: request.operation, user: request.userInfo, object: request.object, oldObject: request.oldObject, policy: ctx.policy, leaseToken, leaseStaleness });
}

function breakGlassStamp(object: unknown): string | undefined {
  const value = (object as { metadata?: { annotations?: Record<string, unknown> } } | undefined)?.metadata?.annotations?.[BREAK_GLASS_ANNOTATION];
  return typeof value === 'string' ? value : undefined;
}

/**
 * The object already carries the stamp an earlier call of this same request wrote (the API
 * server reinvokes mutating webhooks under `reinvocationPolicy: IfNeeded`): the same audit
 * text, and not the stamp the stored object had before this request. Stamping again would
 * change the timestamp on every call and never settle.
 */
function stampedByThisRequest(request: AdmissionRequest, audit: string): boolean {
  const current = breakGlassStamp(request.object);
  if (current === undefined || current === breakGlassStamp(request.oldObject)) return false;
  const [timestamp, ...rest] = current.split(' ');
  return rest.join(' ') === audit && !Number.isNaN(Date.parse(timestamp ?? ''));
}

export function handleMutate(request: AdmissionRequest, ctx: HandlerContext): HandlerOutcome {
  // Never mutate on DELETE: there is nothing to default and the object is going away.
  if (outOfScope(request, ctx) || request.operation === 'DELETE' || completesDeletion(request)) return allow(request, 'ignored');
  const ownership = ownershipOf(request, ctx);
  if (ownership.kind === 'istiod' || ownership.kind === 'denied') {
    // istiod's entries are not ours; denied writes are refused by the validating webhook
    // with the reason, so defaulting them would only make the patch noise.
    return { ...allow(request, 'ignored'), ownership: ownership.kind };
  }
  const original = request.object;
  let mutated = applyDefaults(original, ctx.policy);
  if (ownership.kind === 'break-glass' && mutated !== null && typeof mutated === 'object' && !stampedByThisRequest(request, ownership.audit)) {
    mutated = structuredClone(mutated);
    const meta = ((mutated as { metadata?: Record<string, unknown> }).metadata ??= {});
    const annotations = (meta.annotations !== null && typeof meta.annotations === 'object' ? meta.annotations : {}) as Record<string, string>;
    annotations[BREAK_GLASS_ANNOTATION] = `${ctx.now().toISOString()} ${ownership.audit}`;
    meta.annotations = annotations;
  }
  if (original === null || typeof original !== 'object' || mutated === original) {
    return { ...allow(request), ownership: ownership.kind };
  }
  const operations = jsonPatch.compare(original, mutated as object);
  if (operations.length === 0) return { ...allow(request), ownership: ownership.kind };
  return {
    ...allow(request, 'patched', { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(operations)).toString('base64') }),
    ownership: ownership.kind,
  };
}

/** A violation the old object already had: shown as a warning on UPDATE, not a denial (validation ratcheting). */
const violationKey = (v: Violation): string => `${v.rule}\u0000${v.path}\u0000${renderValue(v.value)}`;

/**
 * No `details.causes` in the status: kubectl prints causes instead of the message, which
 * would hide both "admission webhook ... denied the request" and our full explanation.
 */
const REASONS = { 403: 'Forbidden', 409: 'Conflict', 422: 'Invalid' } as const;

function deny(request: AdmissionRequest, ref: string, violations: Violation[], code: keyof typeof REASONS, warnings: string[], kind: OwnershipDecision['kind']): HandlerOutcome {
  return {
    response: {
      uid: request.uid,
      allowed: false,
      status: { code, reason: REASONS[code], message: denialMessage(ref, violations) },
      ...(warnings.length > 0 ? { warnings: clampWarnings(warnings) } : {}),
    },
    decision: 'denied',
    violations,
    ownership: kind,
  };
}

export function handleValidate(request: AdmissionRequest, ctx: HandlerContext): HandlerOutcome {
  if (outOfScope(request, ctx)) return allow(request, 'ignored');
  if (completesDeletion(request)) return allow(request);
  const namespace = namespaceOf(request, ctx.namespace);
  const ref = entryRef(request, namespace);
  const ownership = ownershipOf(request, ctx);
  const warnings: string[] = [];
  const extra: Partial<AdmissionResponse> = {};
  switch (ownership.kind) {
    case 'denied':
      // A late write of a deposed leader is a conflict the daemon retries (it then finds its term over).
      return deny(request, ref, [ownership.violation], ownership.retry === true ? 409 : 403, [], ownership.kind);
    case 'controller':
    case 'istiod':
      return { ...allow(request), ownership: ownership.kind };
    case 'break-glass':
      warnings.push(ownership.warning);
      extra.auditAnnotations = { 'break-glass': ownership.audit };
      break;
    case 'owner':
    case 'unmanaged':
      break;
  }
  if (request.operation === 'DELETE') {
    return { ...allow(request, 'allowed', { ...extra, ...(warnings.length ? { warnings: clampWarnings(warnings) } : {}) }), ownership: ownership.kind };
  }

  const evalCtx = { policy: ctx.policy, namespace, view: ctx.view };
  const verdict = evaluateEntry(request.object, evalCtx);
  let violations = verdict.violations;
  if (request.operation === 'UPDATE' && violations.length > 0 && request.oldObject !== undefined) {
    const before = new Set(evaluateEntry(request.oldObject, evalCtx).violations.map(violationKey));
    const kept: Violation[] = [];
    for (const v of violations) {
      if (before.has(violationKey(v))) warnings.push(`existing violation left as is: ${describeViolation(v)}`);
      else kept.push(v);
    }
    violations = kept;
  }
  for (const w of verdict.warnings) warnings.push(`${w.path}: ${w.message}`);
  for (const s of verdict.skipped) warnings.push(`[${s.rule}] not checked: ${s.reason}`);
  if (violations.length > 0) return deny(request, ref, violations, 422, warnings, ownership.kind);
  return {
    ...allow(request, 'allowed', { ...extra, ...(warnings.length > 0 ? { warnings: clampWarnings(warnings) } : {}) }),
    ownership: ownership.kind,
  };
}
