import { describe, expect, it } from 'vitest';
import { Semaphore } from '../../src/util/semaphore.ts';

describe('Semaphore', () => {
  it('run() holds at most `limit` tasks at once, releases on failure, and keeps arrival order', async () => {
    const slots = new Semaphore(2);
    let active = 0;
    let peak = 0;
    const started: number[] = [];
    const task = (i: number) => async (): Promise<number> => {
      started.push(i);
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      if (i === 1) throw new Error('boom');
      return i;
    };
    const results = await Promise.allSettled([0, 1, 2, 3, 4].map((i) => slots.run(task(i))));
    expect(peak).toBe(2);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    // Every slot came back: two more run at once immediately.
    await slots.acquire();
    await slots.acquire();
  });
});

describe('Semaphore with several permits', () => {
  it('runs a holder of every permit alone, after those before it and before those after it', async () => {
    const slots = new Semaphore(3);
    const order: string[] = [];
    await slots.acquire();
    await slots.acquire();
    const alone = slots.acquire(3).then(() => order.push('alone'));
    const later = slots.acquire().then(() => order.push('later'));
    await Promise.resolve();
    // One permit is free, but the holder of all waits first, and the later one waits behind it.
    expect(order).toEqual([]);
    slots.release();
    slots.release();
    await alone;
    expect(order).toEqual(['alone']);
    slots.release(3);
    await later;
    expect(order).toEqual(['alone', 'later']);
  });
});
