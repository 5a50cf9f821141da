/**
 * An in-memory, indexed picture of the namespace state the rules need: WorkloadEntries by
 * canonical address, Services with selectors, ServiceAccount names. Informers feed it in
 * the webhook; the offline check fills it from files or one list call per resource. Pure:
 * no client, no timers.
 */
import { canonicalAddress } from '../policy/address.ts';
import { leaderToken } from '../policy/markers.ts';
import type { ClusterView } from '../policy/cluster-view.ts';
import { selectorMatches, stringLabels } from '../policy/labels.ts';
import type { Labels } from '../policy/types.ts';

export type IndexedKind = 'WorkloadEntry' | 'Service' | 'ServiceAccount' | 'Lease';

/** A Lease's duration when it gives none (client-go's default). */
const DEFAULT_LEASE_SECONDS = 15;

interface ObjectLike {
  metadata?: { name?: unknown; namespace?: unknown };
  spec?: { address?: unknown; selector?: unknown; holderIdentity?: unknown; leaseTransitions?: unknown; acquireTime?: unknown; leaseDurationSeconds?: unknown };
}

function key(obj: ObjectLike, fallbackNamespace: string): { namespace: string; name: string } | undefined {
  const name = obj.metadata?.name;
  const ns = obj.metadata?.namespace;
  if (typeof name !== 'string' || name === '') return undefined;
  return { namespace: typeof ns === 'string' && ns !== '' ? ns : fallbackNamespace, name };
}

export class ClusterIndex implements ClusterView {
  /** Which (kind, namespace) pairs are fully loaded; a view answers only for those. */
  readonly #loaded = new Set<string>();
  readonly #entryAddress = new Map<string, string | undefined>(); // ns/name -> canonical address
  readonly #byAddress = new Map<string, Set<string>>(); // ns\0address -> names
  readonly #services = new Map<string, Map<string, Labels>>(); // ns -> name -> selector
  /**
   * ns -> "key\0value" -> names of Services whose selector has that pair: a review is checked
   * against the few Services that share a label with it, not against every Service.
   */
  readonly #servicesByPair = new Map<string, Map<string, Set<string>>>();
  readonly #serviceAccounts = new Map<string, Set<string>>(); // ns -> names
  /** ns/name -> the term it shows, when this index last saw it change (local clock), and its duration. */
  readonly #leases = new Map<string, { token: string | null; seenAt: number; durationMs: number }>();
  readonly #defaultNamespace: string;
  readonly #now: () => number;

  constructor(defaultNamespace: string, options: { now?: () => number } = {}) {
    this.#defaultNamespace = defaultNamespace;
    this.#now = options.now ?? (() => performance.now());
  }

  markLoaded(kind: IndexedKind, namespace: string): void {
    this.#loaded.add(`${kind}\u0000${namespace}`);
  }

  isLoaded(kind: IndexedKind, namespace: string): boolean {
    return this.#loaded.has(`${kind}\u0000${namespace}`);
  }

  upsert(kind: IndexedKind, obj: unknown): void {
    if (obj === null || typeof obj !== 'object') return;
    const k = key(obj, this.#defaultNamespace);
    if (k === undefined) return;
    switch (kind) {
      case 'WorkloadEntry':
        this.#removeEntry(k.namespace, k.name);
        this.#addEntry(k.namespace, k.name, canonicalAddress((obj as ObjectLike).spec?.address));
        break;
      case 'Service': {
        this.#removeService(k.namespace, k.name);
        const selector = stringLabels((obj as ObjectLike).spec?.selector);
        const byName = this.#services.get(k.namespace) ?? new Map<string, Labels>();
        byName.set(k.name, selector);
        this.#services.set(k.namespace, byName);
        const byPair = this.#servicesByPair.get(k.namespace) ?? new Map<string, Set<string>>();
        for (const [labelKey, value] of Object.entries(selector)) {
          const pair = `${labelKey}\u0000${value}`;
          const names = byPair.get(pair) ?? new Set<string>();
          names.add(k.name);
          byPair.set(pair, names);
        }
        this.#servicesByPair.set(k.namespace, byPair);
        break;
      }
      case 'ServiceAccount': {
        const names = this.#serviceAccounts.get(k.namespace) ?? new Set<string>();
        names.add(k.name);
        this.#serviceAccounts.set(k.namespace, names);
        break;
      }
      case 'Lease': {
        const { holderIdentity, leaseTransitions, acquireTime, leaseDurationSeconds } = (obj as ObjectLike).spec ?? {};
        const holder = typeof holderIdentity === 'string' && holderIdentity !== '' ? holderIdentity : undefined;
        // Seen now: a holder's renewal is a change (renewTime), so a live holder is seen every retry period.
        this.#leases.set(`${k.namespace}/${k.name}`, {
          token: holder === undefined ? null : leaderToken(holder, typeof leaseTransitions === 'number' ? leaseTransitions : 0, acquireTime),
          seenAt: this.#now(),
          durationMs: (typeof leaseDurationSeconds === 'number' && leaseDurationSeconds > 0 ? leaseDurationSeconds : DEFAULT_LEASE_SECONDS) * 1000,
        });
        break;
      }
    }
  }

  remove(kind: IndexedKind, obj: unknown): void {
    if (obj === null || typeof obj !== 'object') return;
    const k = key(obj, this.#defaultNamespace);
    if (k === undefined) return;
    switch (kind) {
      case 'WorkloadEntry':
        this.#removeEntry(k.namespace, k.name);
        break;
      case 'Service':
        this.#removeService(k.namespace, k.name);
        break;
      case 'ServiceAccount':
        this.#serviceAccounts.get(k.namespace)?.delete(k.name);
        break;
      case 'Lease':
        this.#leases.delete(`${k.namespace}/${k.name}`);
        break;
    }
  }

  /** Replaces everything known of one kind in one namespace (an informer relist). */
  replace(kind: IndexedKind, namespace: string, objects: readonly unknown[]): void {
    switch (kind) {
      case 'WorkloadEntry':
        for (const id of [...this.#entryAddress.keys()]) {
          const [ns, name] = id.split('/') as [string, string];
          if (ns === namespace) this.#removeEntry(ns, name);
        }
        break;
      case 'Service':
        this.#services.delete(namespace);
        this.#servicesByPair.delete(namespace);
        break;
      case 'ServiceAccount':
        this.#serviceAccounts.delete(namespace);
        break;
      case 'Lease':
        for (const id of [...this.#leases.keys()]) if (id.startsWith(`${namespace}/`)) this.#leases.delete(id);
        break;
    }
    for (const obj of objects) this.upsert(kind, obj);
    this.markLoaded(kind, namespace);
  }

  entryCount(namespace: string): number {
    let n = 0;
    for (const id of this.#entryAddress.keys()) if (id.startsWith(`${namespace}/`)) n++;
    return n;
  }

  #addEntry(namespace: string, name: string, address: string | undefined): void {
    this.#entryAddress.set(`${namespace}/${name}`, address);
    if (address === undefined) return;
    const slot = `${namespace}\u0000${address}`;
    const names = this.#byAddress.get(slot) ?? new Set<string>();
    names.add(name);
    this.#byAddress.set(slot, names);
  }

  #removeService(namespace: string, name: string): void {
    const selector = this.#services.get(namespace)?.get(name);
    if (selector === undefined) return;
    this.#services.get(namespace)?.delete(name);
    const byPair = this.#servicesByPair.get(namespace);
    for (const [labelKey, value] of Object.entries(selector)) {
      const pair = `${labelKey}\u0000${value}`;
      const names = byPair?.get(pair);
      names?.delete(name);
      if (names?.size === 0) byPair?.delete(pair);
    }
  }

  #removeEntry(namespace: string, name: string): void {
    const id = `${namespace}/${name}`;
    if (!this.#entryAddress.has(id)) return;
    const address = this.#entryAddress.get(id);
    this.#entryAddress.delete(id);
    if (address === undefined) return;
    const slot = `${namespace}\u0000${address}`;
    const names = this.#byAddress.get(slot);
    names?.delete(name);
    if (names?.size === 0) this.#byAddress.delete(slot);
  }

  entryNamesWithAddress(namespace: string, address: string): readonly string[] | undefined {
    if (!this.isLoaded('WorkloadEntry', namespace)) return undefined;
    return [...(this.#byAddress.get(`${namespace}\u0000${address}`) ?? [])];
  }

  servicesSelecting(namespace: string, labels: Labels): readonly { name: string; selector: Labels }[] | undefined {
    if (!this.isLoaded('Service', namespace)) return undefined;
    const byPair = this.#servicesByPair.get(namespace);
    const selectors = this.#services.get(namespace);
    const candidates = new Set<string>();
    for (const [labelKey, value] of Object.entries(labels)) for (const name of byPair?.get(`${labelKey}\u0000${value}`) ?? []) candidates.add(name);
    const out: { name: string; selector: Labels }[] = [];
    for (const name of [...candidates].sort()) {
      const selector = selectors?.get(name);
      if (selector !== undefined && selectorMatches(selector, labels)) out.push({ name, selector });
    }
    return out;
  }

  serviceAccountExists(namespace: string, name: string): boolean | undefined {
    if (!this.isLoaded('ServiceAccount', namespace)) return undefined;
    return this.#serviceAccounts.get(namespace)?.has(name) ?? false;
  }

  leaseToken(namespace: string, name: string): string | null | undefined {
    if (!this.isLoaded('Lease', namespace)) return undefined;
    return this.#leases.get(`${namespace}/${name}`)?.token ?? null;
  }

  leaseStaleness(namespace: string, name: string): { unseenMs: number; durationMs: number } | undefined {
    const lease = this.#leases.get(`${namespace}/${name}`);
    if (lease === undefined || lease.token === null) return undefined;
    const unseenMs = this.#now() - lease.seenAt;
    return unseenMs > lease.durationMs ? { unseenMs, durationMs: lease.durationMs } : undefined;
  }
}
