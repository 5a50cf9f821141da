import { describe, expect, it } from 'vitest';
import { orderingKeys } from '../../src/sync/ordering.ts';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('KeyedQueue', () => {
  it('runs tasks sharing a key one after another in queue order, others in parallel, and survives a failure', async () => {
    const queue = new KeyedQueue();
    const log: string[] = [];
    const task = (name: string, ms: number, fail = false) => async (): Promise<string> => {
      log.push(`start ${name}`);
      await tick(ms);
      log.push(`end ${name}`);
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([
      queue.run(['vps:a'], task('a1', 20, true)),
      queue.run(['vps:b'], task('b1', 5)),
      // Waits for both: it shares a key with each.
      queue.run(['vps:a', 'vps:b'], task('ab', 1)),
      queue.run(['vps:a'], task('a2', 1)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(log).toEqual(['start a1', 'start b1', 'end b1', 'end a1', 'start ab', 'end ab', 'start a2', 'end a2']);
    await queue.idle();
  });

  it('idle() waits for everything queued', async () => {
    const queue = new KeyedQueue();
    let done = false;
    void queue.run(['k'], async () => {
      await tick(10);
      done = true;
    });
    await queue.idle();
    expect(done).toBe(true);
  });
});

describe('orderingKeys', () => {
  it('orders by VPS, name and the canonical address, so two spellings of one address share a key', () => {
    expect(orderingKeys({ vpsId: 'v1', name: 'vps-jp-01', address: '2001:DB8::1' })).toEqual(orderingKeys({ vpsId: 'v1', name: 'vps-jp-01', address: '2001:db8:0:0::1' }));
    expect(orderingKeys({ vpsId: 'v1', name: '', address: undefined })).toEqual(['vps:v1']);
  });
});
