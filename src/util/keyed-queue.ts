/**
 * Runs tasks so that two tasks sharing any key never overlap and start in the order they were
 * queued; tasks with no key in common run in parallel. The consumer queues each event under
 * its VPS, name and address, and the resync queues its repairs under the same keys (see
 * src/sync/ordering.ts), so a repair never interleaves with an event about the same VPS.
 */
export class KeyedQueue {
  /** The last task queued under each key; a new task on that key starts after it settles. */
  readonly #tails = new Map<string, Promise<void>>();

  run<T>(keys: readonly string[], task: () => Promise<T>): Promise<T> {
    const previous = Promise.all(keys.map((k) => this.#tails.get(k) ?? Promise.resolve()));
    const result = previous.then(task);
    // The queue waits for settling, not success: a failed task must not stall its keys.
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    for (const k of keys) this.#tails.set(k, tail);
    void tail.then(() => {
      for (const k of keys) if (this.#tails.get(k) === tail) this.#tails.delete(k);
    });
    return result;
  }

  /** Settles once everything queued so far has settled. */
  async idle(): Promise<void> {
    await Promise.all(this.#tails.values());
  }
}
