import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { watchFiles } from '../../src/util/file-watch.ts';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('watchFiles', () => {
  let dir: string | undefined;
  let stop: (() => void) | undefined;
  afterEach(async () => {
    stop?.();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('never reports a file half-way through a truncate-then-write, only what it settles on', async () => {
    dir = await mkdtemp(join(tmpdir(), 'edge-registrar-watch-'));
    const file = join(dir, 'policy.yaml');
    await writeFile(file, 'ports: { allowed: true }\n');
    const seen: string[] = [];
    stop = watchFiles([file], [await readFile(file)], { intervalMs: 20, settleMs: 80, onChange: ([c]) => seen.push(c?.toString() ?? ''), onError: () => undefined });
    // A slow writer: truncated, a pause (the watcher fires), then the new contents.
    const handle = await open(file, 'w');
    await tick(30);
    await handle.write('app: xrayr\n');
    await handle.close();
    await expect.poll(() => seen.length, { timeout: 3000 }).toBeGreaterThan(0);
    await tick(300);
    expect(seen).toEqual(['app: xrayr\n']);
  });
});
