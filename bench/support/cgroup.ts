/**
 * A memory cgroup with a limit, as a pod's container gets: processes moved into it are
 * charged for their memory and OOM-killed by the kernel past the limit. cgroup v2 (a child
 * of this process's cgroup in the unified hierarchy) or v1 (the memory controller's
 * hierarchy). Creating one needs write access to the hierarchy (root, or a delegated
 * subtree); when there is none, createMemoryCgroup says why and returns undefined, and the
 * caller runs with the heap flags alone.
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface MemoryCgroup {
  path: string;
  version: 1 | 2;
  add(pid: number): Promise<void>;
  /** Highest usage charged so far (page cache included, as the kernel counts for the limit). */
  peakBytes(): Promise<number>;
  /** Processes the kernel OOM-killed in it. */
  oomKills(): Promise<number>;
  remove(): Promise<void>;
}

async function ownCgroup(controller: 'memory' | 'unified'): Promise<string | undefined> {
  const lines = (await readFile('/proc/self/cgroup', 'utf8')).split('\n');
  const line = controller === 'unified' ? lines.find((l) => l.startsWith('0::')) : lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
  return line?.split(':').slice(2).join(':');
}

async function readNumber(path: string): Promise<number> {
  return Number((await readFile(path, 'utf8')).trim());
}

async function keyed(path: string, key: string): Promise<number> {
  const line = (await readFile(path, 'utf8')).split('\n').find((l) => l.startsWith(`${key} `));
  return Number(line?.split(' ')[1] ?? 0);
}

/** What each cgroup version calls the limit, the peak charge and the file that counts OOM kills. */
const FILES = {
  1: { limit: 'memory.limit_in_bytes', peak: 'memory.max_usage_in_bytes', events: 'memory.oom_control' },
  2: { limit: 'memory.max', peak: 'memory.peak', events: 'memory.events' },
} as const;

async function create(path: string, version: 1 | 2, limitBytes: number): Promise<MemoryCgroup> {
  const files = FILES[version];
  await mkdir(path);
  try {
    await writeFile(join(path, files.limit), String(limitBytes));
  } catch (error) {
    await rmdir(path).catch(() => undefined);
    throw error;
  }
  // v1: charges made before a process is moved in move with it (v2 has no such switch).
  if (version === 1) await writeFile(join(path, 'memory.move_charge_at_immigrate'), '3').catch(() => undefined);
  return {
    path,
    version,
    add: (pid) => writeFile(join(path, 'cgroup.procs'), String(pid)),
    peakBytes: () => readNumber(join(path, files.peak)),
    oomKills: () => keyed(join(path, files.events), 'oom_kill'),
    remove: () => rmdir(path),
  };
}

export async function createMemoryCgroup(name: string, limitBytes: number, log: (line: string) => void): Promise<MemoryCgroup | undefined> {
  // v1 first where the memory controller is mounted on its own: a v2 mount beside it then has no memory controller.
  const candidates: [string, 1 | 2][] = [];
  const v1Own = await ownCgroup('memory');
  if (v1Own !== undefined) candidates.push([join('/sys/fs/cgroup/memory', v1Own, name), 1]);
  const v2Own = await ownCgroup('unified');
  if (v2Own !== undefined) for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) candidates.push([join(root, v2Own, name), 2]);
  const attempts: string[] = [];
  for (const [path, version] of candidates) {
    try {
      return await create(path, version, limitBytes);
    } catch (error) {
      attempts.push(`v${version} ${path}: ${(error as Error).message}`);
    }
  }
  log(`[cgroup] no memory cgroup for ${name} (${attempts.join('; ') || 'no memory controller'}); the heap flags alone bound it`);
  return undefined;
}
