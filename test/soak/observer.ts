/**
 * Records every state of every WorkloadEntry in the namespace, in the API server's order:
 * list, then watch from the list's resourceVersion; when the watch ends (the API server
 * stopped, paused past the timeout, or 410 Gone) it lists again. The verdict checks each
 * recorded state against the events (verify.ts), so a wrong state that was later repaired
 * is still found.
 */
import * as k8s from '@kubernetes/client-node';
import { loadKubeConfig, makeApiClient, WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL } from '../../src/kube/client.ts';
import { STREAM_ID_ANNOTATION, VPS_ID_ANNOTATION } from '../../src/policy/markers.ts';
import type { ObservedEntry } from './verify.ts';

interface EntryObject {
  metadata?: { name?: string; annotations?: Record<string, string>; resourceVersion?: string };
  spec?: { address?: string; labels?: Record<string, string> };
}

export function observed(object: EntryObject): ObservedEntry {
  return {
    name: object.metadata?.name ?? '',
    vpsId: object.metadata?.annotations?.[VPS_ID_ANNOTATION],
    streamId: object.metadata?.annotations?.[STREAM_ID_ANNOTATION],
    address: object.spec?.address,
    country: object.spec?.labels?.country,
  };
}

export class EntryObserver {
  readonly history: ObservedEntry[] = [];
  /** How many times the watch had to start again from a list. */
  relists = 0;
  #stopped = false;
  #abort: AbortController | undefined;
  readonly #kubeconfig: () => string;
  readonly #namespace: string;

  /** kubeconfig is read at each list: the API server may have come back on new credentials. */
  constructor(kubeconfig: () => string, namespace: string) {
    this.#kubeconfig = kubeconfig;
    this.#namespace = namespace;
  }

  start(): void {
    void this.#loop();
  }

  /** The current entries, by a fresh list (for the final verdict). */
  async list(): Promise<ObservedEntry[]> {
    return (await this.#list()).items.map(observed);
  }

  async #list(): Promise<{ items: EntryObject[]; resourceVersion: string }> {
    const api = makeApiClient(loadKubeConfig(this.#kubeconfig()), k8s.CustomObjectsApi, 10_000);
    const list = (await api.listNamespacedCustomObject({ group: WORKLOAD_ENTRY_GROUP, version: 'v1', namespace: this.#namespace, plural: WORKLOAD_ENTRY_PLURAL })) as { items: EntryObject[]; metadata?: { resourceVersion?: string } };
    return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '' };
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      try {
        const { items, resourceVersion } = await this.#list();
        for (const item of items) this.history.push(observed(item));
        await this.#watch(resourceVersion);
      } catch {
        // The API server is away: list again shortly.
      }
      this.relists++;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  #watch(resourceVersion: string): Promise<void> {
    return new Promise((resolve) => {
      const watch = new k8s.Watch(loadKubeConfig(this.#kubeconfig()));
      const path = `/apis/${WORKLOAD_ENTRY_GROUP}/v1/namespaces/${this.#namespace}/${WORKLOAD_ENTRY_PLURAL}`;
      watch
        .watch(
          path,
          { resourceVersion, allowWatchBookmarks: false, timeoutSeconds: 60 },
          (phase, object: EntryObject) => {
            if (phase === 'ADDED' || phase === 'MODIFIED') this.history.push(observed(object));
          },
          () => { resolve(); },
        )
        .then((abort) => {
          this.#abort = abort;
          if (this.#stopped) abort.abort();
        })
        .catch(() => { resolve(); });
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#abort?.abort();
  }
}
