/**
 * A real redis-server for tests and the local stack: installed from Debian packages when
 * missing, started on a free 127.0.0.1 port with no persistence unless asked, stopped by
 * its owner (and by itself if the owner dies: it watches the owner's pid).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianCommand } from './debian.ts';

const exec = promisify(execFile);

/** Finds redis-server, installing Debian's package when it is not there. */
export function ensureRedisServer(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  return ensureDebianCommand('redis-server', 'redis-server', log);
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

/**
 * `count` ports free now and distinct from each other: freePort() closes what it found, so two
 * calls may hand out the same port, and servers started together (a cluster's nodes and their
 * bus ports) must not be given one port twice.
 */
export async function distinctFreePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** Starts a server and polls `ready` (a failure counts as not yet) for 20 s; the error carries its output. */
export async function spawnUntilReady(binary: string, args: string[], failure: string, ready: () => Promise<boolean>): Promise<ChildProcess> {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  child.stderr.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${binary} exited with ${child.exitCode}: ${output}`);
    if (await ready().catch(() => false)) return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${failure}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, and SIGKILL if it has not exited 5 s later. */
export function stopServer(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
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
  /** Serve TLS only, on the port, with this certificate (clients are not asked for one). */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

export async function startRedis({ binary, port, dataDir, password, tls }: StartRedisOptions): Promise<RunningRedis> {
  const chosen = port ?? (await freePort());
  const listen = tls === undefined
    ? ['--port', String(chosen)]
    : ['--port', '0', '--tls-port', String(chosen), '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-ca-cert-file', tls.caFile, '--tls-auth-clients', 'no'];
  const args = ['--bind', '127.0.0.1', ...listen, '--save', '', '--daemonize', 'no', '--loglevel', 'warning'];
  if (dataDir !== undefined) args.push('--dir', dataDir, '--appendonly', 'yes', '--appendfsync', 'everysec');
  else args.push('--appendonly', 'no');
  if (password !== undefined) args.push('--requirepass', password);
  const cli = binary.replace(/redis-server$/, 'redis-cli');
  const auth = password !== undefined ? ['-a', password, '--no-auth-warning'] : [];
  const secure = tls !== undefined ? ['--tls', '--cacert', tls.caFile] : [];
  const child = await spawnUntilReady(binary, args, `redis-server did not answer PING on port ${chosen}`, async () =>
    (await exec(cli, ['-h', '127.0.0.1', '-p', String(chosen), ...secure, ...auth, 'ping'])).stdout.trim() === 'PONG',
  );
  const credentials = password !== undefined ? `:${encodeURIComponent(password)}@` : '';
  let stopped: Promise<void> | undefined;
  return {
    port: chosen,
    url: `${tls === undefined ? 'redis' : 'rediss'}://${credentials}127.0.0.1:${chosen}`,
    process: child,
    stop: () => (stopped ??= stopServer(child)),
  };
}

export interface RunningSentinel {
  port: number;
  stop(): Promise<void>;
}

/**
 * A real Sentinel (redis-server in sentinel mode) watching `master` under `name`. It rewrites
 * its configuration file, so the file lives in `dir`.
 */
export async function startSentinel({ binary, dir, master, name }: { binary: string; dir: string; master: number; name: string }): Promise<RunningSentinel> {
  const port = await freePort();
  const conf = join(dir, `sentinel-${port}.conf`);
  await writeFile(conf, [`bind 127.0.0.1`, `port ${port}`, `daemonize no`, `sentinel monitor ${name} 127.0.0.1 ${master} 1`, `sentinel down-after-milliseconds ${name} 5000`, ''].join('\n'));
  const cli = binary.replace(/redis-server$/, 'redis-cli');
  const child = await spawnUntilReady(binary, [conf, '--sentinel'], `redis sentinel on port ${port} did not report master ${name}`, async () =>
    (await exec(cli, ['-h', '127.0.0.1', '-p', String(port), 'sentinel', 'get-master-addr-by-name', name])).stdout.includes(String(master)),
  );
  return { port, stop: () => stopServer(child) };
}
