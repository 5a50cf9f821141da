/**
 * No process loads code it does not run: the sync daemon's module graph holds nothing of the
 * webhook's, and the webhook's nothing of the sync daemon's. Read from the sources' static
 * imports, as the process loads them.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Every project module reachable from `entry` through static imports (type-only ones excluded). */
async function moduleGraph(entry: string): Promise<Set<string>> {
  const seen = new Set<string>();
  const visit = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = await readFile(file, 'utf8');
    for (const match of source.matchAll(/^import\s+(?!type\s)[^'"]*?from\s+'(\.[^']+)';$/gm)) {
      await visit(resolve(dirname(file), match[1] as string));
    }
  };
  await visit(join(ROOT, entry));
  return new Set([...seen].map((f) => relative(ROOT, f)));
}

describe('each process loads only what it runs', () => {
  it('the sync daemon loads nothing from src/webhook/', async () => {
    const graph = await moduleGraph('src/sync/run.ts');
    expect(graph.has('src/http/probes.ts')).toBe(true);
    expect([...graph].filter((f) => f.startsWith('src/webhook/'))).toEqual([]);
  });

  it('the executable loads a subcommand\'s code only when it runs: neither process\'s code up front', async () => {
    const graph = await moduleGraph('src/cli.ts');
    expect([...graph].filter((f) => f.startsWith('src/webhook/') || f.startsWith('src/sync/') || f.startsWith('src/mesh-telemetry/telemetry-keeper'))).toEqual([]);
  });

  it('the webhook loads nothing from src/sync/', async () => {
    const graph = await moduleGraph('src/webhook/run.ts');
    expect(graph.has('src/http/serving.ts')).toBe(true);
    expect([...graph].filter((f) => f.startsWith('src/sync/'))).toEqual([]);
    // The managed Telemetry and Redis are the sync daemon's; the webhook's configuration is a file of its own (src/config/webhook.ts).
    expect([...graph].filter((f) => f.startsWith('src/mesh-telemetry/') || f.startsWith('src/redis/') || f.startsWith('src/config/sync'))).toEqual([]);
  });
});
