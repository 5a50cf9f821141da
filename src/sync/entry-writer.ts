/**
 * Writes managed WorkloadEntries: server-side apply under a fixed field manager (force,
 * since the sync daemon owns every field it sets), and deletes that first check the entry
 * is ours (managed marker and the same vps-id) and then delete with that resourceVersion
 * as a precondition, so an entry someone else owns, or rewrote meanwhile, is never removed.
 * Errors are classified: transient ones are retried by the caller, permanent ones (the
 * webhook's denial, an invalid object) dead-letter the event.
 */
import * as k8s from '@kubernetes/client-node';
import { WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL, makeApiClient } from '../kube/client.ts';
import { canonicalAddress } from '../policy/address.ts';
import { LEADER_ANNOTATION, MANAGED_SELECTOR, STREAM_ID_ANNOTATION, VPS_ID_ANNOTATION, isManaged } from '../policy/markers.ts';
import { compareStreamIds, isStreamId } from '../util/stream-id.ts';
import type { ManagedEntry } from './planner.ts';
import { TermEndedError } from './term.ts';

export const FIELD_MANAGER = 'edge-registrar-sync';

/** A WorkloadEntry as read from the API server: only what the daemon looks at is typed. */
export interface StoredEntry {
  metadata?: { name?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; resourceVersion?: string; generation?: number };
  spec?: Record<string, unknown>;
}

export class TransientError extends Error {
  override name = 'TransientError';
}

/** Why the cluster refused a write for good: the webhook (naming its rules), the API server, or the webhook's stream-order fence (a newer event wrote the entry). */
export type RefusalRule = 'webhook.denied' | 'kubernetes.invalid' | 'ownership.stream-order';

export class PermanentError extends Error {
  override name = 'PermanentError';
  readonly rule: RefusalRule;
  /** The edge-registrar rules a webhook denial names (empty for other refusals). */
  readonly deniedRules: readonly string[];
  constructor(message: string, rule: RefusalRule, options?: ErrorOptions & { deniedRules?: readonly string[] }) {
    super(message, options);
    this.rule = rule;
    this.deniedRules = options?.deniedRules ?? [];
  }
}

/**
 * The rule ids of a denial by edge-registrar's webhook: each violation is a line
 * `  [rule.id] path: ...` (policy/describe.ts), the one part of the message that is ours to
 * define. The Status carries no causes on purpose (kubectl would print them instead of the
 * message), so the message is where the rules are.
 */
export function deniedRules(message: string): string[] {
  return [...message.matchAll(/^\s*\[([a-z0-9-]+(?:\.[a-z0-9-]+)+)\] /gm)].map((m) => m[1] as string);
}

function statusMessage(error: k8s.ApiException<unknown>): string {
  const body = error.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: unknown };
      if (typeof parsed.message === 'string') return parsed.message;
    } catch {
      return body;
    }
  }
  if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') {
    return (body as { message: string }).message;
  }
  return error.message;
}

/** Turns a client-node failure into Transient (retry, never ack) or Permanent (dead-letter). */
export function classify(error: unknown, what: string): TransientError | PermanentError {
  if (error instanceof k8s.ApiException) {
    const message = `${what}: HTTP ${error.code}: ${statusMessage(error)}`;
    const denied = message.includes('admission webhook') && message.includes('denied the request');
    if (error.code === 422 || error.code === 400 || (error.code === 403 && denied)) {
      const rules = denied ? deniedRules(statusMessage(error)) : [];
      // The webhook's stream-order fence: this write is older than the entry's state.
      const superseded = rules.includes('ownership.stream-order');
      return new PermanentError(message, superseded ? 'ownership.stream-order' : denied ? 'webhook.denied' : 'kubernetes.invalid', { cause: error, deniedRules: rules });
    }
    // 5xx (including "failed calling webhook"), 429, 409 conflicts, 404 for a missing
    // namespace or CRD, 401/403 from our own RBAC: the cluster's state, not the event's fault.
    return new TransientError(message, { cause: error });
  }
  return new TransientError(`${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
}

/** Entries per list call: small pages keep one response (and its parse) small. */
export const LIST_PAGE_SIZE = 500;

/** What resync compares of a stored entry; the rest (managedFields above all) is dropped. */
function compared(entry: StoredEntry): StoredEntry {
  const { name, labels, annotations, resourceVersion, generation } = entry.metadata ?? {};
  return { metadata: { name, labels, annotations, resourceVersion, generation }, spec: entry.spec };
}

export class EntryWriter {
  readonly #api: k8s.CustomObjectsApi;
  readonly #namespace: string;
  readonly #version: string;
  /** The list of the namespace by address in flight, shared by the rechecks that may join it. */
  #addressList: { startedAt: number; index: Promise<Map<string, string[]>> } | undefined;

  /** The writer's leadership term (LeaderElector.fencingToken), stamped on every applied entry; none for tools that write outside a term. */
  readonly #fencingToken: (() => string | undefined) | undefined;

  constructor(kubeConfig: k8s.KubeConfig, namespace: string, istioApiVersion: string, fencingToken?: () => string | undefined) {
    this.#api = makeApiClient(kubeConfig, k8s.CustomObjectsApi);
    this.#namespace = namespace;
    this.#version = istioApiVersion;
    this.#fencingToken = fencingToken;
  }

  /** The entry with the writer's term stamped on it; no term (not leading) means no write. */
  #stamped(entry: ManagedEntry): ManagedEntry {
    if (this.#fencingToken === undefined) return entry;
    const token = this.#fencingToken();
    if (token === undefined) throw new TermEndedError(`not leading: ${this.#namespace}/${entry.metadata.name} is not written`);
    return { ...entry, metadata: { ...entry.metadata, annotations: { ...entry.metadata.annotations, [LEADER_ANNOTATION]: token } } };
  }

  #coordinates(): { group: string; version: string; namespace: string; plural: string } {
    return { group: WORKLOAD_ENTRY_GROUP, version: this.#version, namespace: this.#namespace, plural: WORKLOAD_ENTRY_PLURAL };
  }

  /** Server-side apply; returns the entry as stored (its uid names it in Events). */
  async apply(entry: ManagedEntry): Promise<StoredEntry> {
    try {
      return (await this.#api.patchNamespacedCustomObject(
        { ...this.#coordinates(), name: entry.metadata.name, body: this.#stamped(entry), fieldManager: FIELD_MANAGER, force: true },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply),
      )) as StoredEntry;
    } catch (error) {
      throw classify(error, `apply WorkloadEntry ${this.#namespace}/${entry.metadata.name}`);
    }
  }

  async get(name: string): Promise<StoredEntry | undefined> {
    try {
      return (await this.#api.getNamespacedCustomObject({ ...this.#coordinates(), name })) as StoredEntry;
    } catch (error) {
      if (error instanceof k8s.ApiException && error.code === 404) return undefined;
      throw classify(error, `get WorkloadEntry ${this.#namespace}/${name}`);
    }
  }

  /**
   * Lists the entries edge-registrar manages (the label marker), for resync, a page at a time
   * and keeping of each only what resync compares (managedFields are most of each object), so
   * no single response or parse grows with the fleet. bench:memory measured no change in the
   * daemon's resident memory at rest with 10,000 entries (264 against 268 MiB): that growth
   * comes from elsewhere.
   */
  async listManaged(pageSize = LIST_PAGE_SIZE): Promise<StoredEntry[]> {
    const entries: StoredEntry[] = [];
    let token: string | undefined;
    try {
      do {
        const page = (await this.#api.listNamespacedCustomObject({
          ...this.#coordinates(),
          labelSelector: MANAGED_SELECTOR,
          limit: pageSize,
          ...(token !== undefined ? { _continue: token } : {}),
        })) as { items: StoredEntry[]; metadata?: { continue?: string } };
        for (const item of page.items) entries.push(compared(item));
        token = page.metadata?.continue === '' ? undefined : page.metadata?.continue;
      } while (token !== undefined);
      return entries;
    } catch (error) {
      throw classify(error, `list WorkloadEntries in ${this.#namespace}`);
    }
  }

  /**
   * Every entry in the namespace (managed or not) other than `exceptName` whose address is
   * this one, read from the API server itself: the truth an informer cache may lag behind.
   *
   * After an `address.unique` denial every event in flight may ask at once, and again on each
   * retry: the answers come from one list of the namespace at a time, shared. A caller joins
   * a list only if it started after the caller asked (an older one may predate the change
   * the caller is checking for); otherwise it waits for the next, which every caller that
   * arrived meanwhile shares. Lists are paged, and only names and addresses are kept.
   */
  async entriesWithAddress(address: string, exceptName: string): Promise<string[]> {
    const index = await this.#addressListAfter(performance.now());
    const wanted = canonicalAddress(address) ?? address;
    return (index.get(wanted) ?? []).filter((name) => name !== exceptName);
  }

  /** The running or next list of the namespace by address, started no earlier than `since`. */
  #addressListAfter(since: number): Promise<Map<string, string[]>> {
    const current = this.#addressList;
    if (current !== undefined && current.startedAt >= since) return current.index;
    if (current !== undefined) return current.index.then(() => this.#addressListAfter(since), () => this.#addressListAfter(since));
    const startedAt = performance.now();
    const index = this.#listAddresses().finally(() => {
      if (this.#addressList?.index === index) this.#addressList = undefined;
    });
    this.#addressList = { startedAt, index };
    return index;
  }

  async #listAddresses(pageSize = LIST_PAGE_SIZE): Promise<Map<string, string[]>> {
    const byAddress = new Map<string, string[]>();
    let token: string | undefined;
    try {
      do {
        const page = (await this.#api.listNamespacedCustomObject({ ...this.#coordinates(), limit: pageSize, ...(token !== undefined ? { _continue: token } : {}) })) as { items: StoredEntry[]; metadata?: { continue?: string } };
        for (const entry of page.items) {
          const value = entry.spec?.address;
          if (typeof value !== 'string') continue;
          const key = canonicalAddress(value) ?? value;
          byAddress.set(key, [...(byAddress.get(key) ?? []), entry.metadata?.name ?? '']);
        }
        token = page.metadata?.continue === '' ? undefined : page.metadata?.continue;
      } while (token !== undefined);
      return byAddress;
    } catch (error) {
      throw classify(error, `list WorkloadEntries in ${this.#namespace}`);
    }
  }

  /**
   * Deletes the entry if it is ours for this VPS. Returns what happened; an entry that is
   * not managed, or managed for another VPS, is left alone. With `streamId` (the event the
   * delete stands for), an entry written by a newer event is left alone too ('superseded'):
   * a deposed leader's late delete must not remove a newer re-register. The delete carries
   * the resourceVersion read as a precondition, so the check and the delete are one step.
   */
  async deleteOwned(name: string, vpsId: string | undefined, streamId?: string, fence: () => void = () => undefined): Promise<'deleted' | 'absent' | 'not-ours' | 'superseded'> {
    const current = await this.get(name);
    if (current === undefined) return 'absent';
    const metadata = current.metadata ?? {};
    if (!isManaged(metadata.labels)) return 'not-ours';
    if (vpsId !== undefined && metadata.annotations?.[VPS_ID_ANNOTATION] !== vpsId) return 'not-ours';
    const written = metadata.annotations?.[STREAM_ID_ANNOTATION];
    if (streamId !== undefined && written !== undefined && isStreamId(written) && compareStreamIds(written, streamId) > 0) return 'superseded';
    // The read may have taken long: the term must still hold when the delete is sent.
    fence();
    try {
      await this.#api.deleteNamespacedCustomObject({
        ...this.#coordinates(),
        name,
        body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { resourceVersion: metadata.resourceVersion } },
      });
      return 'deleted';
    } catch (error) {
      if (error instanceof k8s.ApiException && error.code === 404) return 'absent';
      throw classify(error, `delete WorkloadEntry ${this.#namespace}/${name}`);
    }
  }
}
