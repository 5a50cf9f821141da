/**
 * Calls back when the contents of a set of files change. Kubernetes updates mounted
 * Secrets and ConfigMaps by swapping a `..data` symlink, which inotify on the file itself
 * misses; so this polls the contents (a hash of a few KB) on an interval and also listens
 * to the parent directories to react sooner.
 *
 * A change counts only once the contents read the same twice, `settleMs` apart: a writer
 * that truncates and then writes (most editors, `fs.writeFile`) is otherwise seen half-way,
 * and an empty policy file is a valid one (all defaults) that would briefly be in force.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';

export interface FileWatchOptions {
  intervalMs: number;
  /** How long new contents must stay unchanged before they count; 100 ms by default. */
  settleMs?: number;
  onChange: (contents: Buffer[]) => void;
  onError: (error: unknown) => void;
}

export async function readAll(paths: readonly string[]): Promise<Buffer[]> {
  return Promise.all(paths.map((p) => readFile(p)));
}

function digest(contents: readonly Buffer[]): string {
  const hash = createHash('sha256');
  for (const c of contents) hash.update(c).update('\u0000');
  return hash.digest('hex');
}

export function watchFiles(paths: readonly string[], initial: readonly Buffer[], options: FileWatchOptions): () => void {
  const settleMs = options.settleMs ?? 100;
  let last = digest(initial);
  let checking = false;
  let again = false;
  const check = async (): Promise<void> => {
    if (checking) {
      again = true;
      return;
    }
    checking = true;
    try {
      const contents = await readAll(paths);
      const current = digest(contents);
      if (current !== last) {
        await new Promise((r) => setTimeout(r, settleMs));
        if (digest(await readAll(paths)) === current) {
          last = current;
          options.onChange(contents);
        } else {
          // Still being written: look again once it has had time to settle.
          again = true;
        }
      }
    } catch (error) {
      options.onError(error);
    } finally {
      checking = false;
      if (again) {
        again = false;
        void check();
      }
    }
  };
  const timer = setInterval(() => void check(), options.intervalMs);
  timer.unref();
  const watchers: FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    try {
      const w = watch(dir, { persistent: false }, () => void check());
      w.on('error', () => undefined); // the interval keeps working if the directory goes away
      watchers.push(w);
    } catch {
      // Directory not watchable (e.g. some network filesystems): polling alone is enough.
    }
  }
  return () => {
    clearInterval(timer);
    for (const w of watchers) w.close();
  };
}
