/**
 * Keeps a ClusterIndex in step with the cluster through client-node informers, one per
 * resource the rules need, scoped to the guarded namespace. client-node's informers stop
 * on unexpected errors (and `start()` resolves even when the first list failed), so each
 * is watched here: the first successful list marks it synced, errors restart it with
 * backoff and jitter.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';
import { WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL, makeApiClient } from './client.ts';
import { ClusterIndex, type IndexedKind } from './cluster-index.ts';

export interface WatchedIndexOptions {
  kubeConfig: k8s.KubeConfig;
  namespace: string;
  istioApiVersion: string;
  logger: Logger;
  onRestart?: (kind: IndexedKind) => void;
  /** Called once per resource, when its first list has been indexed. */
  onSynced?: (kind: IndexedKind) => void;
}

interface Watched {
  kind: IndexedKind;
  informer: k8s.Informer<k8s.KubernetesObject>;
  /** The index holds a full list of this resource. */
  listed: boolean;
  /** The most recent list call succeeded (its items are indexed once start() returns). */
  lastListOk: boolean;
  failures: number;
  timer?: NodeJS.Timeout;
}

export class WatchedIndex {
  readonly index: ClusterIndex;
  readonly #watched: Watched[] = [];
  readonly #log: Logger;
  readonly #onRestart: ((kind: IndexedKind) => void) | undefined;
  readonly #onSynced: ((kind: IndexedKind) => void) | undefined;
  readonly #namespace: string;
  #stopped = false;

  constructor(options: WatchedIndexOptions) {
    const { kubeConfig, namespace, istioApiVersion } = options;
    this.#namespace = namespace;
    this.index = new ClusterIndex(namespace);
    this.#log = options.logger.child({ component: 'cluster-cache', namespace });
    this.#onRestart = options.onRestart;
    this.#onSynced = options.onSynced;
    const core = makeApiClient(kubeConfig, k8s.CoreV1Api, 60_000);
    const custom = makeApiClient(kubeConfig, k8s.CustomObjectsApi, 60_000);
    this.#add(kubeConfig, 'WorkloadEntry', `/apis/${WORKLOAD_ENTRY_GROUP}/${istioApiVersion}/namespaces/${namespace}/${WORKLOAD_ENTRY_PLURAL}`, async () =>
      (await custom.listNamespacedCustomObject({
        group: WORKLOAD_ENTRY_GROUP,
        version: istioApiVersion,
        namespace,
        plural: WORKLOAD_ENTRY_PLURAL,
      })) as k8s.KubernetesListObject<k8s.KubernetesObject>,
    );
    this.#add(kubeConfig, 'Service', `/api/v1/namespaces/${namespace}/services`, () => core.listNamespacedService({ namespace }));
    this.#add(kubeConfig, 'ServiceAccount', `/api/v1/namespaces/${namespace}/serviceaccounts`, () => core.listNamespacedServiceAccount({ namespace }));
    // The sync daemon's Lease: who leads now, for the leader fence (ownership.ts). client-node's
    // informer takes no field selector, so every Lease of the namespace (a handful) is watched.
    const coordination = makeApiClient(kubeConfig, k8s.CoordinationV1Api, 60_000);
    this.#add(kubeConfig, 'Lease', `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, () => coordination.listNamespacedLease({ namespace }));
  }

  #add(kubeConfig: k8s.KubeConfig, kind: IndexedKind, path: string, list: () => Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>): void {
    const watched: Watched = {
      kind,
      listed: false,
      lastListOk: false,
      failures: 0,
      informer: k8s.makeInformer(kubeConfig, path, async () => {
        watched.lastListOk = false;
        const result = await list();
        watched.lastListOk = true;
        watched.failures = 0;
        return result;
      }),
    };
    const { informer } = watched;
    informer.on('add', (obj) => { this.index.upsert(kind, obj); });
    informer.on('update', (obj) => { this.index.upsert(kind, obj); });
    informer.on('delete', (obj) => { this.index.remove(kind, obj); });
    informer.on('error', (err: unknown) => {
      watched.failures++;
      const delay = backoffDelay(watched.failures, { baseMs: 500, maxMs: 30_000 });
      this.#log.warn({ kind, err, retryInMs: delay }, 'watch failed; restarting');
      this.#onRestart?.(kind);
      if (this.#stopped) return;
      watched.timer = setTimeout(() => void this.#start(watched), delay);
    });
    this.#watched.push(watched);
  }

  async #start(watched: Watched): Promise<void> {
    if (this.#stopped) return;
    // start() lists, indexes the items through the add callbacks, then opens the watch;
    // when the list fails it resolves after the error callback instead.
    await watched.informer.start();
    if (watched.lastListOk && !watched.listed) {
      watched.listed = true;
      this.index.markLoaded(watched.kind, this.#namespace);
      this.#log.info({ kind: watched.kind }, 'cache synced');
      this.#onSynced?.(watched.kind);
    }
  }

  /** Starts every informer; resolves once each has listed or failed its first list (then retried in the background). */
  async start(): Promise<void> {
    await Promise.all(this.#watched.map((w) => this.#start(w)));
  }

  synced(): boolean {
    return this.#watched.every((w) => w.listed);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const w of this.#watched) {
      if (w.timer) clearTimeout(w.timer);
      await w.informer.stop();
    }
  }
}
