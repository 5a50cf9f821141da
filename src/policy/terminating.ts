/**
 * What may be done to an entry that is being deleted. Once `metadata.deletionTimestamp` is
 * set, the only work left is removing finalizers: the API server refuses new ones, and the
 * controllers that hold them (the garbage collector's `foregroundDeletion` and `orphan`, a
 * user's own) take theirs off with an UPDATE. Such an update is allowed to anyone, managed
 * entry or not: the deletion it completes was judged when it was requested, and blocking
 * it leaves the entry Terminating for good.
 *
 * Anything else on a terminating entry is an ordinary update, judged by every rule: istiod
 * keeps serving an entry until it is gone, so a terminating entry is not a place where the
 * rules stop.
 */
import { isDeepStrictEqual } from 'node:util';

/** Metadata the API server writes itself; a difference there is not the requester's change. */
const SERVER_MANAGED_METADATA = ['finalizers', 'resourceVersion', 'generation', 'managedFields', 'uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink'] as const;

function isTerminating(object: unknown): boolean {
  const metadata = (object as { metadata?: { deletionTimestamp?: unknown } } | null | undefined)?.metadata;
  return typeof metadata?.deletionTimestamp === 'string' && metadata.deletionTimestamp !== '';
}

/** The object without what a finalizer removal may change. */
function withoutFinalizersAndServerFields(object: unknown): unknown {
  if (object === null || typeof object !== 'object') return object;
  const { metadata, ...rest } = object as { metadata?: unknown };
  if (metadata === null || typeof metadata !== 'object') return rest;
  const ignored: ReadonlySet<string> = new Set(SERVER_MANAGED_METADATA);
  const kept = Object.fromEntries(Object.entries(metadata).filter(([field]) => !ignored.has(field)));
  return { ...rest, metadata: kept };
}

/**
 * An UPDATE of a terminating entry whose only difference from the stored object is in
 * `metadata.finalizers` (and the metadata the API server manages).
 */
export function isFinalizerRemoval(operation: string, object: unknown, oldObject: unknown): boolean {
  if (operation !== 'UPDATE' || !isTerminating(object) || oldObject === undefined) return false;
  return isDeepStrictEqual(withoutFinalizersAndServerFields(object), withoutFinalizersAndServerFields(oldObject));
}
