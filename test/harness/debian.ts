/**
 * Commands from Debian packages, installed with apt-get when missing (as root, or with
 * passwordless sudo): redis-server, and promtool and prometheus from the prometheus package.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export async function onPath(command: string): Promise<string | undefined> {
  try {
    const { stdout } = await exec('sh', ['-c', `command -v ${command}`]);
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The path of `command`, installing the Debian package `pkg` first when it is not on PATH. */
export async function ensureDebianCommand(command: string, pkg: string, log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const found = await onPath(command);
  if (found !== undefined) return found;
  log(`[debian] ${command} not found; installing the Debian package ${pkg} (apt-get)`);
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : ['sudo', '-n'];
  // No service is started by the package's scripts (policy-rc.d may be absent in a container).
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', RUNLEVEL: '1' };
  const apt = async (args: string[]): Promise<void> => {
    const [cmd, ...rest] = [...sudo, 'apt-get', ...args];
    await exec(cmd ?? 'apt-get', rest, { env, maxBuffer: 64 * 1024 * 1024 });
  };
  try {
    await apt(['update', '-q']);
    await apt(['install', '-y', '-q', '--no-install-recommends', pkg]);
  } catch (error) {
    throw new Error(`could not install ${pkg} with apt-get (${(error as Error).message.split('\n')[0] ?? ''}); install the Debian package ${pkg} and retry`, { cause: error });
  }
  const installed = await onPath(command);
  if (installed === undefined) throw new Error(`apt-get installed ${pkg} but ${command} is not on PATH`);
  log(`[debian] installed ${installed}`);
  return installed;
}
