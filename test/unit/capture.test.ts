import { describe, expect, it } from 'vitest';
import { capture } from '../harness/capture.ts';

describe('capture', () => {
  // CI once failed with every test passing: redis-cli exited before its (empty) input was
  // written, and the EPIPE on its stdin surfaced as an uncaught exception in the test file.
  it('a child that exits without reading its input gives its exit code, not an uncaught EPIPE', async () => {
    const input = 'x'.repeat(4 * 1024 * 1024); // far past a pipe's buffer: the write must meet the closed pipe
    const results = await Promise.all(Array.from({ length: 5 }, () => capture('sh', ['-c', 'echo refused >&2; exit 3'], { input })));
    for (const result of results) expect(result).toEqual({ code: 3, stdout: '', stderr: 'refused\n' });
  });

  it('passes its input to a child that reads it', async () => {
    expect(await capture('cat', [], { input: 'hello' })).toEqual({ code: 0, stdout: 'hello', stderr: '' });
  });
});
