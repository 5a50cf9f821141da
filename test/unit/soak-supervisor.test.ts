/**
 * The soak's kubelet-like supervisor restarts a replica that exits, so the model's verdict
 * cannot see a crash: the supervisor must tell a crash (an exit nobody asked for) from a stop
 * a fault asked for, and the soak fails on any crash. A daemon crash in a 30-minute soak
 * (seed 415701734, an Event recorder log line that threw) passed that soak unnoticed.
 */
import { spawn } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { SyncReplica } from '../soak/stack.ts';

let replica: SyncReplica | undefined;

afterEach(async () => {
  await replica?.stop();
  replica = undefined;
});

it('an exit nobody asked for is a crash, with its code; an exit after SIGTERM is not', async () => {
  let launches = 0;
  // The first process crashes at once; the ones after it run until stopped.
  replica = new SyncReplica('a', 1, () => spawn(process.execPath, ['-e', launches++ === 0 ? 'process.exit(3)' : 'setInterval(() => {}, 1000)']), () => undefined);
  replica.start();
  await expect.poll(() => launches, { timeout: 10_000 }).toBe(2);
  expect(replica.restarts).toEqual({ terminated: 0, crashed: 1, liveness: 0 });
  expect(replica.crashes[0]).toMatch(/^sync a exited on its own \(3\) at /);
  await expect.poll(() => replica!.running).toBe(true);
  expect((await replica.terminate(5_000)).result).toBe('exited');
  await expect.poll(() => launches, { timeout: 10_000 }).toBe(3);
  expect(replica.restarts).toEqual({ terminated: 1, crashed: 1, liveness: 0 });
});
