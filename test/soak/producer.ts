/**
 * sigma-api's side: publishes planned events in plan order, each flush one pipeline (so a
 * handoff's two events and a burst land in one read batch), and records each event's stream
 * id. On a Redis Cluster each pipeline ends with WAIT 1 on the stream's primary. It can be held around Redis faults: with a command in flight when Redis restarts, a
 * client cannot know whether the XADD happened, and the soak's model must be exact.
 */
import type { Cluster, Redis } from 'ioredis';
import { primaryConnection } from '../harness/redis-cluster.ts';
import type { PlannedEvent } from './workload.ts';

export class Producer {
  readonly published: PlannedEvent[] = [];
  readonly #queue: PlannedEvent[] = [];
  readonly #redis: Redis;
  readonly #stream: string;
  #held = false;
  #inFlight: Promise<void> = Promise.resolve();

  readonly #cluster: boolean;

  /** `cluster`: `redis` is a Cluster client; batches go to the stream's primary and wait for a replica. */
  constructor(redis: Redis, stream: string, options: { cluster: boolean } = { cluster: false }) {
    this.#redis = redis;
    this.#stream = stream;
    this.#cluster = options.cluster;
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
      const target = this.#cluster ? await primaryConnection(this.#redis as unknown as Cluster, this.#stream, 'stale') : this.#redis;
      const pipeline = target.pipeline();
      for (const event of batch) pipeline.xadd(this.#stream, '*', ...event.fields);
      // On a cluster, published means a replica has it too (as the event contract asks of
      // sigma-api there): a primary's failover can otherwise lose acknowledged XADDs.
      if (this.#cluster) pipeline.wait(1, 5_000);
      const results = await pipeline.exec();
      batch.forEach((event, i) => {
        const [error, id] = results?.[i] ?? [new Error('no reply'), undefined];
        if (error !== null) throw new Error(`publishing failed, the soak's model is no longer exact: ${error.message}`);
        event.streamId = String(id);
        this.published.push(event);
      });
      if (this.#cluster && Number(results?.[batch.length]?.[1] ?? 0) < 1) throw new Error("publishing failed: no replica acknowledged the batch, so a failover could lose it and the soak's model would no longer be exact");
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
