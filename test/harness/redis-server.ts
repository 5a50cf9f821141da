/**
 * A real redis-server for tests and the local stack: installed from Debian packages when
 * missing, started on a free 127.0.0.1 port with no persistence unless asked, stopped by
 * its owner (and by itself if the owner dies: it watches the owner's pid).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const exec = promisify(execFile);

async function onPath(command: string): Promise<string | undefined> {
  try {
    const { stdout } = await exec('sh', ['-c', `command -v ${command}`]);
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Finds redis-server, installing Debian's package when it is not there. */
export async function ensureRedisServer(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const found = await onPath('redis-server');
  if (found !== undefined) return found;
  log('[redis] redis-server not found; installing the Debian package redis-server (apt-get)');
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : ['sudo', '-n'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = async (args: string[]): Promise<void> => {
    const [cmd, ...rest] = [...sudo, 'apt-get', ...args];
    await exec(cmd ?? 'apt-get', rest, { env, maxBuffer: 64 * 1024 * 1024 });
  };
  try {
    await apt(['update', '-q']);
    await apt(['install', '-y', '-q', '--no-install-recommends', 'redis-server']);
  } catch (error) {
    throw new Error(`could not install redis-server with apt-get (${(error as Error).message.split('\n')[0] ?? ''}); install the Debian package redis-server and retry`, { cause: error });
  }
  const installed = await onPath('redis-server');
  if (installed === undefined) throw new Error('apt-get installed redis-server but it is not on PATH');
  log(`[redis] installed ${installed}`);
  return installed;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export interface RunningRedis {
  port: number;
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  binary: string;
  port?: number;
  /** Directory for AOF persistence; none when unset (tests start empty). */
  dataDir?: string;
  password?: string;
}

export async function startRedis({ binary, port, dataDir, password }: StartRedisOptions): Promise<RunningRedis> {
  const chosen = port ?? (await freePort());
  const args = ['--bind', '127.0.0.1', '--port', String(chosen), '--save', '', '--daemonize', 'no', '--loglevel', 'warning'];
  if (dataDir !== undefined) args.push('--dir', dataDir, '--appendonly', 'yes', '--appendfsync', 'everysec');
  else args.push('--appendonly', 'no');
  if (password !== undefined) args.push('--requirepass', password);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  child.stderr.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  const cli = binary.replace(/redis-server$/, 'redis-cli');
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${output}`);
    try {
      const auth = password !== undefined ? ['-a', password, '--no-auth-warning'] : [];
      const { stdout } = await exec(cli, ['-h', '127.0.0.1', '-p', String(chosen), ...auth, 'ping']);
      if (stdout.trim() === 'PONG') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING on port ${chosen}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const auth = password !== undefined ? `:${encodeURIComponent(password)}@` : '';
  let stopped: Promise<void> | undefined;
  return {
    port: chosen,
    url: `redis://${auth}127.0.0.1:${chosen}`,
    process: child,
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve();
          return;
        }
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      })),
  };
}
