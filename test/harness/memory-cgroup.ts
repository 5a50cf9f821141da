/**
 * A memory cgroup of the test's own, below the one this process runs in, with a limit: a
 * process started in it is OOM-killed past the limit, as a container is, and sees the limit
 * as its constrained memory (process.constrainedMemory(), as in a pod). Works with cgroup v1
 * (memory.limit_in_bytes) and v2 (memory.max), where this sandbox may write its own cgroup.
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface MemoryCgroup {
  path: string;
  /** `command args...` wrapped so the process joins the cgroup before it starts. */
  wrap(command: string, args: readonly string[]): { command: string; args: string[] };
  /** The highest memory use the cgroup has seen, in bytes. */
  peakBytes(): Promise<number>;
  /** How many times the kernel OOM-killed a process in it. */
  oomKills(): Promise<number>;
  remove(): Promise<void>;
}

async function ownMemoryCgroup(): Promise<{ version: 1 | 2; dir: string }> {
  const lines = (await readFile('/proc/self/cgroup', 'utf8')).trim().split('\n');
  const v1 = lines.map((l) => l.split(':')).find(([, controllers]) => controllers?.split(',').includes('memory'));
  if (v1 !== undefined) return { version: 1, dir: join('/sys/fs/cgroup/memory', v1[2] ?? '/') };
  const v2 = lines.find((l) => l.startsWith('0::'));
  if (v2 !== undefined) return { version: 2, dir: join('/sys/fs/cgroup', v2.slice(3)) };
  throw new Error('no memory cgroup in /proc/self/cgroup');
}

/** Why a memory cgroup cannot be made here, or undefined when it can. */
export async function memoryCgroupUnavailable(): Promise<string | undefined> {
  try {
    const probe = await createMemoryCgroup(`probe-${process.pid}`, 64 * 1024 * 1024);
    await probe.remove();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

export async function createMemoryCgroup(name: string, limitBytes: number): Promise<MemoryCgroup> {
  const own = await ownMemoryCgroup();
  const path = join(own.dir, name);
  await mkdir(path);
  const file = (v1: string, v2: string): string => join(path, own.version === 1 ? v1 : v2);
  try {
    await writeFile(file('memory.limit_in_bytes', 'memory.max'), String(limitBytes));
    // No swap to hide behind (v1 counts it separately; v2 has its own knob).
    if (own.version === 2) await writeFile(join(path, 'memory.swap.max'), '0').catch(() => undefined);
  } catch (error) {
    await rmdir(path).catch(() => undefined);
    throw error;
  }
  const readNumber = async (v1: string, v2: string): Promise<number> => Number((await readFile(file(v1, v2), 'utf8')).trim());
  return {
    path,
    wrap: (command, args) => ({ command: '/bin/sh', args: ['-c', `echo $$ > ${file('cgroup.procs', 'cgroup.procs')} && exec "$0" "$@"`, command, ...args] }),
    peakBytes: () => readNumber('memory.max_usage_in_bytes', 'memory.peak'),
    oomKills: async () => {
      const text = await readFile(file('memory.oom_control', 'memory.events'), 'utf8');
      return Number(/oom_kill (\d+)/.exec(text)?.[1] ?? 0);
    },
    remove: async () => {
      // The cgroup can go only once its processes are gone; they may take a moment to exit.
      for (let attempt = 0; ; attempt++) {
        try {
          await rmdir(path);
          return;
        } catch (error) {
          if (attempt >= 50) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    },
  };
}
