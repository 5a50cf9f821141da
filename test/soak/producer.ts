/**
 * sigma-api's side: publishes planned events in plan order, each flush one pipeline (so a
 * handoff's two events and a burst land in one read batch), and records each event's stream
 * id. It can be held around Redis faults: with a command in flight when Redis restarts, a
 * client cannot know whether the XADD happened, and the soak's model must be exact.
 */
import type { Redis } from 'ioredis';
import type { PlannedEvent } from './workload.ts';

export class Producer {
  readonly published: PlannedEvent[] = [];
  readonly #queue: PlannedEvent[] = [];
  readonly #redis: Redis;
  readonly #stream: string;
  #held = false;
  #inFlight: Promise<void> = Promise.resolve();

  constructor(redis: Redis, stream: string) {
    this.#redis = redis;
    this.#stream = stream;
  }

  get queued(): number {
    return this.#queue.length;
  }

  enqueue(events: readonly PlannedEvent[]): void {
    this.#queue.push(...events);
  }

  /** Publishes what is queued, unless held; a failure is fatal to the run (see the header). */
  flush(): Promise<void> {
    if (this.#held || this.#queue.length === 0) return this.#inFlight;
    const batch = this.#queue.splice(0);
    this.#inFlight = this.#inFlight.then(async () => {
      const pipeline = this.#redis.pipeline();
      for (const event of batch) pipeline.xadd(this.#stream, '*', ...event.fields);
      const results = await pipeline.exec();
      batch.forEach((event, i) => {
        const [error, id] = results?.[i] ?? [new Error('no reply'), undefined];
        if (error !== null) throw new Error(`publishing failed, the soak's model is no longer exact: ${error.message}`);
        event.streamId = String(id);
        this.published.push(event);
      });
    });
    return this.#inFlight;
  }

  async hold(): Promise<void> {
    this.#held = true;
    await this.#inFlight;
  }

  release(): void {
    this.#held = false;
  }
}
