/**
 * sigma-api's view of the outcome stream: a reader that follows it for the whole run, as
 * sigma-api's worker would (XREAD BLOCK, from the last id seen), and keeps every record it
 * heard, including those a failover later took back. The verdict counts the events it heard
 * of twice: a failover that loses unreplicated writes makes the daemon apply those events
 * again, and sigma-api hears a second outcome for each.
 */
import type { Redis } from 'ioredis';

export interface HeardOutcome {
  sourceId: string;
  outcome: string;
}

export class OutcomeTail {
  readonly heard: HeardOutcome[] = [];
  readonly #redis: Redis;
  readonly #stream: string;
  #stopped = false;
  #running: Promise<void> | undefined;

  constructor(redis: Redis, stream: string) {
    this.#redis = redis;
    this.#stream = stream;
  }

  start(): void {
    this.#running ??= this.#follow();
  }

  async #follow(): Promise<void> {
    let cursor = '0-0';
    while (!this.#stopped) {
      try {
        // Bounded: a read in flight when the connection drops is never settled by a client that
        // does not re-send (the soak's clients re-send nothing), so it is given up on.
        let timer: NodeJS.Timeout | undefined;
        const reply = await Promise.race([
          this.#redis.xread('COUNT', 1000, 'BLOCK', 1000, 'STREAMS', this.#stream, cursor),
          new Promise<never>((_, reject) => (timer = setTimeout(() => { reject(new Error('the read did not return')); }, 5_000))),
        ]).finally(() => { clearTimeout(timer); });
        for (const [id, fields] of reply?.[0]?.[1] ?? []) {
          cursor = id;
          this.heard.push({ sourceId: fields[fields.indexOf('source_id') + 1] ?? '?', outcome: fields[fields.indexOf('outcome') + 1] ?? '?' });
        }
      } catch {
        // A failover or a restart of Redis: read on from the last id heard.
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }
}
