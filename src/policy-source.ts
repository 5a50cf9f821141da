/**
 * Reads the policy file (or uses the built-in defaults) and, for long-running commands,
 * reloads it when it changes. A file that fails to parse on reload is logged and counted,
 * and the policy in force stays: a typo in a ConfigMap must not open or close the gate.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { DEFAULT_POLICY, parsePolicy, type Policy } from './policy/policy-file.ts';
import { watchFiles } from './util/file-watch.ts';

export async function loadPolicy(path: string | undefined): Promise<Policy> {
  if (path === undefined) return DEFAULT_POLICY;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`--policy ${path}: cannot read: ${(error as Error).message}`, { cause: error });
  }
  return parsePolicy(text, path);
}

export interface PolicySource {
  current(): Policy;
  stop(): void;
}

export async function watchedPolicy(
  path: string | undefined,
  options: { intervalMs: number; logger: Logger; onReload?: (result: 'ok' | 'error') => void },
): Promise<PolicySource> {
  let policy = await loadPolicy(path);
  if (path === undefined) return { current: () => policy, stop: () => undefined };
  const initial = await readFile(path);
  const stop = watchFiles([path], [initial], {
    intervalMs: options.intervalMs,
    onChange: ([contents]) => {
      try {
        policy = parsePolicy(contents?.toString('utf8') ?? '', path);
        options.logger.info({ policy: path }, 'policy reloaded');
        options.onReload?.('ok');
      } catch (err) {
        options.logger.error({ policy: path, err }, 'policy reload failed; keeping the previous policy');
        options.onReload?.('error');
      }
    },
    onError: (err) => {
      options.logger.error({ policy: path, err }, 'policy file unreadable; keeping the previous policy');
      options.onReload?.('error');
    },
  });
  return { current: () => policy, stop };
}
