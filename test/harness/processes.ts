/**
 * The webhook and the sync daemon as their own processes (`node src/cli.ts webhook|sync`),
 * the way they run in a cluster: used by `npm run local` and the benchmarks. Each start
 * returns the child at once (so a caller can record its pid) and a ready() that waits until
 * it really serves: the webhook registered and called by the API server, the sync daemon
 * holding its Lease.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { httpsRequest } from './https-client.ts';
import { kubeconfigFor, type StartedCluster } from './kube-cluster.ts';
import { freePort } from './redis-server.ts';
import { localWebhookManifests } from './webhook-registration.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

export interface CliProcess {
  child: ChildProcess;
  /** Resolves once the process serves; rejects if it exits first or takes too long. */
  ready(): Promise<void>;
  /** SIGTERM, then SIGKILL after the grace period; resolves when it has exited, saying how. */
  stop(graceMs?: number): Promise<StopResult>;
}

export interface SpawnOptions {
  /** Append to the log file (a restarted process keeps its predecessor's log). */
  append?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Wraps the command, as a memory cgroup does (memory-cgroup.ts). */
  wrap?: (command: string, args: readonly string[]) => { command: string; args: string[] };
}

/** Spawns `node SCRIPT ARGS` with this Node, output (stdout and stderr) to logFile. */
export function spawnNode(script: string, args: string[], logFile: string, options: SpawnOptions = {}): ChildProcess {
  const { command, args: argv } = options.wrap?.(process.execPath, [script, ...args]) ?? { command: process.execPath, args: [script, ...args] };
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
  const log = createWriteStream(logFile, { flags: options.append === true ? 'a' : 'w' });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  child.once('exit', () => log.end());
  return child;
}

/** Spawns `node src/cli.ts COMMAND ARGS`, output to logFile. */
export function spawnCli(command: string, args: string[], logFile: string, options: SpawnOptions = {}): ChildProcess {
  return spawnNode(CLI, [command, ...args], logFile, options);
}

/** 'killed' when the process had to be sent SIGKILL after the grace period. */
export type StopResult = 'exited' | 'killed';

export function stopChild(child: ChildProcess, graceMs = 15_000): Promise<StopResult> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve('exited');
  return new Promise((resolve) => {
    let result: StopResult = 'exited';
    const timer = setTimeout(() => {
      result = 'killed';
      child.kill('SIGKILL');
    }, graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(result);
    });
    child.kill('SIGTERM');
  });
}

async function poll(what: string, child: ChildProcess, logFile: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what}: the process exited with ${child.exitCode}; see ${logFile}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not done after ${timeoutMs / 1000}s; see ${logFile}`);
}

export interface WebhookProcess extends CliProcess {
  port: number;
  metricsPort: number;
  certDir: string;
}

/**
 * Generates a CA and serving certificate into certDir, starts the webhook with the webhook
 * identity, and on ready() registers it from webhook-config/ and proves the API server calls
 * it (a server-side dry run of a private address is refused by our rule).
 */
export async function spawnWebhook(cluster: StartedCluster, certDir: string, logDir: string, extraArgs: string[] = [], options: SpawnOptions = {}): Promise<WebhookProcess> {
  const ca = createCertificateAuthority('edge-registrar-local-ca', 30);
  await writeCertificateFiles(certDir, ca, createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 }), true);
  const port = await freePort();
  const metricsPort = await freePort();
  const logFile = join(logDir, 'webhook.log');
  const child = spawnCli(
    'webhook',
    [
      '--host', '127.0.0.1',
      '--port', String(port),
      '--metrics-port', String(metricsPort),
      '--tls-cert', join(certDir, 'tls.crt'),
      '--tls-key', join(certDir, 'tls.key'),
      '--kubeconfig', kubeconfigFor(cluster.state, 'webhook'),
      // No load balancer to drain from locally.
      '--shutdown-delay', '0',
      ...extraArgs,
    ],
    logFile,
    options,
  );
  const ready = async (): Promise<void> => {
    await poll('the webhook to be ready', child, logFile, 60_000, async () => (await httpsRequest(port, { path: '/readyz', ca: ca.cert })).status === 200);
    const registered = await cluster.kubectl('admin', ['apply', '-f', '-'], await localWebhookManifests(port, ca.cert));
    if (registered.code !== 0) throw new Error(`registering the webhook failed: ${registered.stderr}`);
    // Until the API server has picked up the registration, a write could slip past it.
    const probe = 'apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vps-jp-99, namespace: airport-prod}\nspec: {address: 10.9.9.9}\n';
    await poll('the API server to call the webhook', child, logFile, 30_000, async () =>
      (await cluster.kubectl('admin', ['apply', '--dry-run=server', '-f', '-'], probe)).stderr.includes('address.public-unicast'),
    );
  };
  return { child, port, metricsPort, certDir, ready, stop: (graceMs) => stopChild(child, graceMs) };
}

export interface SyncProcess extends CliProcess {
  port: number;
}

/** Starts the sync daemon with the sync identity; ready() waits until it holds the Lease. */
export async function spawnSync(cluster: StartedCluster, redisUrl: string, logDir: string, extraArgs: string[] = [], options: SpawnOptions = {}): Promise<SyncProcess> {
  const port = await freePort();
  const logFile = join(logDir, 'sync.log');
  const child = spawnCli('sync', ['--kubeconfig', kubeconfigFor(cluster.state, 'sync'), '--redis-url', redisUrl, '--port', String(port), ...extraArgs], logFile, options);
  const ready = (): Promise<void> =>
    poll('the sync daemon to lead', child, logFile, 60_000, async () => {
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
      return /^edge_registrar_sync_leader 1$/m.test(metrics);
    });
  return { child, port, ready, stop: (graceMs) => stopChild(child, graceMs) };
}
