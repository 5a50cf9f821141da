/**
 * A process that logs faster than its stdout is drained must not grow without bound: the
 * writer holds at most its buffer and drops (and counts) the rest. The stdout here is a
 * real pipe that nobody reads, so the kernel's pipe buffer fills and every write after it
 * would otherwise wait in memory.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { boundedDestination, createLogger, droppedLogLines } from '../../src/observability/logger.ts';
import { createRegistry } from '../../src/observability/metrics.ts';

it('logging into a stdout nobody drains holds at most the buffer, and counts the dropped lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'logger-buffer-'));
  const fifo = join(dir, 'stdout');
  execFileSync('mkfifo', [fifo]);
  // Read-write and non-blocking: the open does not wait for a reader, and nobody reads.
  const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  let stop = (): void => { closeSync(fd); };
  try {
    const maxBytes = 1024 * 1024;
    const destination = boundedDestination(fd, maxBytes) as ReturnType<typeof boundedDestination> & { on(event: 'error', listener: () => void): void; destroy(): void };
    // The writer owns the fd from here and closes it on destroy; a write still in flight then
    // fails, which is expected at the end of this test.
    stop = () => {
      destination.on('error', () => undefined);
      destination.destroy();
    };
    const logger = createLogger('info', 'test', destination);
    const before = droppedLogLines();
    const heapBefore = process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed;
    const line = 'x'.repeat(1_000);
    // 50 MB of log lines, far past the pipe's buffer and the writer's.
    for (let i = 0; i < 50_000; i++) logger.info({ i, line }, 'a busy log line');
    await new Promise((r) => setTimeout(r, 100));
    const dropped = droppedLogLines() - before;
    // Everything past the pipe (64 KiB) and the 1 MiB buffer was dropped, not kept.
    expect(dropped).toBeGreaterThan(48_000);
    expect(process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed - heapBefore).toBeLessThan(40 * 1024 * 1024);
    const metrics = await createRegistry(true).metrics();
    expect(Number(/^edge_registrar_log_lines_dropped_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(dropped);
  } finally {
    stop();
    await new Promise((r) => setTimeout(r, 100));
    rmSync(dir, { recursive: true, force: true });
  }
});
