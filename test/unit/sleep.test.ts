/** A standby replica sleeps several times a second on one long-lived signal: no listener may pile up. */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/sleep.ts';

describe('sleep', () => {
  it('leaves no abort listener behind, however many times it sleeps on one signal', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 2_000; i++) await sleep(0, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('ends early, without throwing, when the signal aborts', async () => {
    const controller = new AbortController();
    // A minute-long sleep that must end within the test's 20 s timeout.
    const sleeping = sleep(60_000, controller.signal);
    controller.abort();
    await expect(sleeping).resolves.toBeUndefined();
  });
});
