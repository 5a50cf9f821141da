/**
 * A counting semaphore: at most `limit` permits held at once, the rest wait in arrival order.
 * A holder may take several permits (all of them: it runs alone); a waiter for many holds up
 * those behind it, so it is never starved by a stream of small ones.
 */
export class Semaphore {
  readonly #limit: number;
  #free: number;
  readonly #waiting: { permits: number; resolve: () => void }[] = [];

  constructor(limit: number) {
    this.#limit = limit;
    this.#free = limit;
  }

  get limit(): number {
    return this.#limit;
  }

  async acquire(permits = 1): Promise<void> {
    const wanted = Math.min(permits, this.#limit);
    if (this.#waiting.length === 0 && this.#free >= wanted) {
      this.#free -= wanted;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push({ permits: wanted, resolve }));
  }

  release(permits = 1): void {
    this.#free += Math.min(permits, this.#limit);
    for (let next = this.#waiting[0]; next !== undefined && this.#free >= next.permits; next = this.#waiting[0]) {
      this.#waiting.shift();
      this.#free -= next.permits;
      next.resolve();
    }
  }

  /** Runs task holding one permit. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }
}
