/**
 * The ownership rule: entries marked as managed by edge-registrar are created, changed and
 * deleted by the sync daemon alone. A break-glass group may still write them (recorded with
 * a warning and an audit annotation), and Kubernetes' own garbage collector and namespace
 * controller may always delete, so a namespace deletion is never blocked.
 *
 * Even the sync daemon may not move an entry backwards in the event stream: a replica that
 * lost the Lease while a write was in flight could otherwise land an older state over the
 * new leader's. The stream id annotation makes that checkable here, at no cost to the daemon.
 */
import { compareStreamIds, isStreamId } from '../util/stream-id.ts';
import { ISTIO_AUTO_REGISTRATION_ANNOTATION, LEADER_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, MANAGED_SELECTOR, STREAM_ID_ANNOTATION, VPS_ID_ANNOTATION, isManaged } from './markers.ts';
import type { Policy } from './policy-file.ts';
import type { Violation } from './types.ts';

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

export interface Requester {
  username: string;
  groups: readonly string[];
}

export interface OwnershipInput {
  operation: Operation;
  user: Requester;
  object: unknown;
  oldObject: unknown;
  policy: Policy;
  /**
   * The sync Lease's term now (`holder@transitions@acquireTime`), null when no one holds it, undefined
   * when the webhook has not seen the Lease yet.
   */
  leaseToken?: string | null | undefined;
  /** Set when the webhook has not seen the Lease change for longer than its duration (cluster-view.ts). */
  leaseStaleness?: { unseenMs: number; durationMs: number } | undefined;
}

export type OwnershipDecision =
  /** Ownership has nothing to say; the content rules decide. */
  | { kind: 'unmanaged' }
  /** The sync daemon writing its own entries. */
  | { kind: 'owner' }
  /** A controller cleaning up (garbage collector, namespace controller): allowed, no content rules. */
  | { kind: 'controller' }
  /** istiod writing an entry it auto-registered: not ours to judge. */
  | { kind: 'istiod' }
  | { kind: 'break-glass'; warning: string; audit: string }
  /** `retry`: the refusal is about timing (a Lease the webhook sees differently), so it is a 409 the sync daemon retries. */
  | { kind: 'denied'; violation: Violation; retry?: boolean };

const labelsOf = (obj: unknown): unknown =>
  obj !== null && typeof obj === 'object' ? (obj as { metadata?: { labels?: unknown } }).metadata?.labels : undefined;

const annotationsOf = (obj: unknown): Record<string, unknown> => {
  const a = obj !== null && typeof obj === 'object' ? (obj as { metadata?: { annotations?: unknown } }).metadata?.annotations : undefined;
  return a !== null && typeof a === 'object' ? (a as Record<string, unknown>) : {};
};

const intersects = (a: readonly string[], b: readonly string[]): boolean => a.some((x) => b.includes(x));

export function isSyncIdentity(user: Requester, policy: Policy): boolean {
  return policy.ownership.syncUsers.includes(user.username) || intersects(user.groups, policy.ownership.syncGroups);
}

/** The sync daemon replacing a newer state with an older one (both stream ids present and valid). */
function streamRegression(object: unknown, oldObject: unknown): Violation | undefined {
  const next = annotationsOf(object)[STREAM_ID_ANNOTATION];
  const previous = annotationsOf(oldObject)[STREAM_ID_ANNOTATION];
  if (typeof next !== 'string' || typeof previous !== 'string' || !isStreamId(next) || !isStreamId(previous)) return undefined;
  if (compareStreamIds(next, previous) >= 0) return undefined;
  return {
    rule: 'ownership.stream-order',
    path: `metadata.annotations["${STREAM_ID_ANNOTATION}"]`,
    value: next,
    problem: `is older than the event ${previous} that wrote the entry's current state`,
    expected: 'a state from an event at least as new as the current one (an older one is a late write from a replica that lost the Lease, and is dropped)',
  };
}

/**
 * The sync daemon's write from a leadership term that is not the Lease's now: a replica that
 * lost the Lease while the write was in flight. Creates carry no resourceVersion to conflict
 * on and no older stream id to compare, so this token is their fence. A write without the
 * annotation (a daemon from before it existed) is not judged.
 */
function staleLeader(object: unknown, leaseToken: string | null | undefined, staleness: OwnershipInput['leaseStaleness']): Violation | undefined {
  const written = annotationsOf(object)[LEADER_ANNOTATION];
  if (typeof written !== 'string') return undefined;
  // The term the webhook shows is only as good as its view of the Lease: past the Lease's
  // duration without a change seen, a takeover may have happened unseen, so no term is vouched for.
  if (staleness !== undefined) {
    return {
      rule: 'ownership.leader',
      path: `metadata.annotations["${LEADER_ANNOTATION}"]`,
      value: written,
      problem: `cannot be checked: the webhook has not seen the sync Lease change for ${(staleness.unseenMs / 1000).toFixed(1)} s, longer than its duration (${staleness.durationMs / 1000} s): its watch of the Lease is broken, or the holder stopped renewing`,
      expected: 'a write checked against a Lease the webhook has seen renewed within its duration (retried until it has)',
    };
  }
  if (written === leaseToken) return undefined;
  return {
    rule: 'ownership.leader',
    path: `metadata.annotations["${LEADER_ANNOTATION}"]`,
    value: written,
    problem: leaseToken === undefined ? 'cannot be checked: the webhook has not seen the sync Lease yet' : `is not the sync Lease's term now (${leaseToken ?? 'no holder'})`,
    expected: 'a write from the replica that holds the Lease now (this one is late: its term ended while it was in flight)',
  };
}

/**
 * What the sync daemon does after a break-glass write, in its own words: what its resync does
 * (within --resync-interval) to an entry it manages. True because the daemon's bookkeeping
 * annotation is kept out of break-glass reach (breakGlassStreamId).
 */
const BREAK_GLASS_AFTERMATH: Record<'CREATE' | 'UPDATE' | 'DELETE', string> = {
  CREATE: 'its next resync restores the registered state if the VPS is registered, and removes the entry after the orphan grace if it is not',
  UPDATE: 'its next resync restores the registered state (changes to the entry do not last unless they come through sigma-api)',
  DELETE: 'its next resync creates the entry again if its VPS is still registered',
};

/**
 * A break-glass write that sets the entry's `edge-registrar.io/stream-id` (on a create) or
 * changes it (on an update; removing it is allowed). That annotation is the daemon's record of
 * the event that wrote the entry, and the webhook refuses the daemon any write with an older
 * one: raised by hand, it would make every later event of the VPS superseded and every repair
 * refused, so the break-glass change could never be undone.
 */
function breakGlassStreamId(operation: Operation, object: unknown, oldObject: unknown): Violation | undefined {
  if (operation !== 'CREATE' && operation !== 'UPDATE') return undefined;
  const next = annotationsOf(object)[STREAM_ID_ANNOTATION];
  const previous = operation === 'UPDATE' ? annotationsOf(oldObject)[STREAM_ID_ANNOTATION] : undefined;
  if (next === undefined || next === previous) return undefined;
  return {
    rule: 'ownership.break-glass',
    path: `metadata.annotations["${STREAM_ID_ANNOTATION}"]`,
    value: next,
    problem: operation === 'CREATE' ? 'is set by a break-glass create; it is the sync daemon\'s record of the event that wrote the entry' : `changes the sync daemon's record of the event that wrote the entry (${typeof previous === 'string' ? previous : 'none'})`,
    expected: operation === 'CREATE' ? 'no such annotation: the daemon adds it when it next writes the entry' : 'the annotation left as it is, or removed',
  };
}

export function decideOwnership({ operation, user, object, oldObject, policy, leaseToken, leaseStaleness }: OwnershipInput): OwnershipDecision {
  const own = policy.ownership;
  if (operation === 'DELETE' && own.controllerDeleters.includes(user.username)) return { kind: 'controller' };

  const subject = operation === 'DELETE' ? oldObject : object;
  if (own.istiodUsers.includes(user.username) && ISTIO_AUTO_REGISTRATION_ANNOTATION in annotationsOf(subject)) {
    return { kind: 'istiod' };
  }

  const managedNow = isManaged(labelsOf(object));
  const managedBefore = isManaged(labelsOf(oldObject));
  if (!managedNow && !managedBefore) return { kind: 'unmanaged' };
  if (isSyncIdentity(user, policy)) {
    const regression = operation === 'UPDATE' ? streamRegression(object, oldObject) : undefined;
    if (regression !== undefined) return { kind: 'denied', violation: regression };
    const late = operation === 'DELETE' ? undefined : staleLeader(object, leaseToken, leaseStaleness);
    return late === undefined ? { kind: 'owner' } : { kind: 'denied', violation: late, retry: true };
  }

  const action = operation === 'CREATE' ? 'create' : operation === 'DELETE' ? 'delete' : 'change';
  if (intersects(user.groups, own.breakGlassGroups)) {
    const bookkeeping = breakGlassStreamId(operation, object, oldObject);
    if (bookkeeping !== undefined) return { kind: 'denied', violation: bookkeeping };
    return {
      kind: 'break-glass',
      warning: `break-glass: ${user.username} may ${action} this edge-registrar-managed entry; ${BREAK_GLASS_AFTERMATH[operation === 'CONNECT' ? 'UPDATE' : operation]}`,
      audit: `${operation} by ${user.username} (groups ${user.groups.join(',')}) via break-glass`,
    };
  }
  const marker = MANAGED_SELECTOR;
  // The VPS whose event would make this change: the kubectl user's way to it through sigma-api.
  const vpsId = [annotationsOf(oldObject)[VPS_ID_ANNOTATION], annotationsOf(object)[VPS_ID_ANNOTATION]].find((v): v is string => typeof v === 'string' && v !== '');
  const forVps = vpsId === undefined ? 'the VPS' : `VPS ${vpsId} (its ${VPS_ID_ANNOTATION} annotation)`;
  const problem =
    managedBefore && !managedNow && operation === 'UPDATE'
      ? `would remove the ${marker} label from a managed entry`
      : `marks an entry managed by edge-registrar, which only the sync daemon may ${action}`;
  return {
    kind: 'denied',
    violation: {
      rule: 'ownership.managed',
      path: `metadata.labels["${MANAGED_BY_LABEL}"]`,
      value: MANAGED_BY_VALUE,
      problem,
      expected:
        `changes through sigma-api: publish a register or retire event for ${forVps} (see \`edge-registrar publish --help\`); ` +
        `in an emergency a member of ${own.breakGlassGroups.join(' or ') || 'the break-glass group'} may write it`,
    },
  };
}
