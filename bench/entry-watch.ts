/**
 * When each WorkloadEntry appeared, as the API server's watch reports it: the end point of
 * every measurement, the same for the daemon and the baseline. Re-lists and re-watches if
 * the watch ends.
 */
import { performance } from 'node:perf_hooks';
import * as k8s from '@kubernetes/client-node';

interface EntryObject {
  metadata: { name: string; resourceVersion: string };
  spec?: { address?: string };
}

export class EntryWatch {
  readonly #kc: k8s.KubeConfig;
  readonly #path: string;
  readonly #list: () => Promise<{ metadata?: { resourceVersion?: string }; items: EntryObject[] }>;
  /** Entries that exist now: name → address. */
  readonly #present = new Map<string, string>();
  #expected = new Map<string, string>();
  #seen = new Map<string, number>();
  #abort: AbortController | undefined;
  #stopped = false;

  constructor(kc: k8s.KubeConfig, namespace: string) {
    this.#kc = kc;
    this.#path = `/apis/networking.istio.io/v1/namespaces/${namespace}/workloadentries`;
    const api = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#list = async () =>
      (await api.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace, plural: 'workloadentries' })) as {
        metadata?: { resourceVersion?: string };
        items: EntryObject[];
      };
  }

  async start(): Promise<void> {
    const list = await this.#list();
    this.#present.clear();
    for (const item of list.items) this.#observe(item);
    const resourceVersion = list.metadata?.resourceVersion;
    this.#abort = await new k8s.Watch(this.#kc).watch(
      this.#path,
      { resourceVersion, allowWatchBookmarks: true },
      (type: string, object: EntryObject) => {
        if (type === 'DELETED') this.#present.delete(object.metadata.name);
        else if (type === 'ADDED' || type === 'MODIFIED') this.#observe(object);
      },
      () => {
        if (!this.#stopped) void this.start();
      },
    );
  }

  stop(): void {
    this.#stopped = true;
    this.#abort?.abort();
  }

  /** From now on, record when each of these (name, address) pairs first appears. */
  expect(pairs: [string, string][]): void {
    this.#expected = new Map(pairs);
    this.#seen = new Map();
    for (const [name, address] of this.#present) if (this.#expected.get(name) === address) this.#seen.set(name, performance.now());
  }

  seenAt(name: string): number | undefined {
    return this.#seen.get(name);
  }

  /** Resolves with the time the last expected entry appeared. */
  async waitForAll(timeoutMs: number): Promise<number> {
    await this.#until(() => this.#seen.size === this.#expected.size, timeoutMs, () => `${this.#seen.size} of ${this.#expected.size} entries seen`);
    return Math.max(...this.#seen.values());
  }

  async waitForCount(count: number, timeoutMs: number): Promise<void> {
    await this.#until(() => this.#present.size === count, timeoutMs, () => `${this.#present.size} entries present, waiting for ${count}`);
  }

  #observe(object: EntryObject): void {
    const address = object.spec?.address ?? '';
    this.#present.set(object.metadata.name, address);
    if (this.#expected.get(object.metadata.name) === address && !this.#seen.has(object.metadata.name)) this.#seen.set(object.metadata.name, performance.now());
  }

  async #until(done: () => boolean, timeoutMs: number, progress: () => string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out: ${progress()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
