/**
 * A delay that ends early, without throwing, when the signal aborts. Built on
 * node:timers/promises, which removes its abort listener when the timer fires: a loop that
 * sleeps several times a second on one long-lived signal (a standby replica) must not add a
 * listener per sleep.
 */
import { setTimeout as delay } from 'node:timers/promises';

export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, signal === undefined ? {} : { signal });
  } catch (error) {
    if (signal?.aborted !== true) throw error;
  }
}
