/**
 * The system under soak, every part a real process on 127.0.0.1: kube-apiserver with etcd
 * (kube-harness, resumable so a stop and start is the same cluster), redis-server with AOF,
 * the webhook (`edge-registrar webhook`, registered through webhook-config/ with
 * failurePolicy Fail) and sync replicas. Replicas are supervised as a kubelet would: one
 * that exits is restarted, and one whose /healthz keeps failing is killed and restarted.
 * Each part can be stopped, paused or restarted by the fault injectors.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, createServingCertificate, type PemPair } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { httpsRequest } from '../harness/https-client.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../harness/kube-cluster.ts';
import type { KubeBinaries } from '../harness/kube-build.ts';
import { spawnCli, spawnNode, stopChild } from '../harness/processes.ts';
import { freePort, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { localWebhookManifests } from '../harness/webhook-registration.ts';

const SYNC_PROCESS = fileURLToPath(new URL('../harness/sync-process.ts', import.meta.url));

export type Log = (line: string) => void;

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not done after ${timeoutMs / 1000} s`);
}

/** SIGSTOP / SIGCONT: a process that hangs, with its sockets open. */
function pause(child: ChildProcess): void {
  if (child.pid !== undefined) process.kill(child.pid, 'SIGSTOP');
}

function resume(child: ChildProcess): void {
  if (child.pid !== undefined) process.kill(child.pid, 'SIGCONT');
}

/** A sync replica under a kubelet-like supervisor. */
export class SyncReplica {
  readonly name: string;
  readonly port: number;
  /** Restarts by cause: exited on its own, or killed after failing liveness. */
  readonly restarts = { exited: 0, liveness: 0 };
  #child: ChildProcess | undefined;
  #wanted = false;
  #probeTimer: NodeJS.Timeout | undefined;
  readonly #spawn: () => ChildProcess;
  readonly #log: Log;

  constructor(name: string, port: number, spawnProcess: () => ChildProcess, log: Log) {
    this.name = name;
    this.port = port;
    this.#spawn = spawnProcess;
    this.#log = log;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  start(): void {
    this.#wanted = true;
    this.#launch();
    this.#probeTimer ??= setInterval(() => void this.#probe(), 2_000);
  }

  #launch(): void {
    const child = this.#spawn();
    this.#child = child;
    child.once('exit', (code, signal) => {
      if (!this.#wanted || this.#child !== child) return;
      // Killed by a fault injector (SIGKILL) or crashed: the supervisor brings it back.
      if (signal !== 'SIGKILL') {
        this.restarts.exited++;
        this.#log(`[supervisor] sync ${this.name} exited (${code ?? signal ?? '?'}); restarting`);
      }
      setTimeout(() => { if (this.#wanted && this.#child === child) this.#launch(); }, 1_000);
    });
  }

  #failures = 0;
  #answered = false;

  /** kubelet's liveness probe: three failures in a row after it once answered, and it is killed. */
  async #probe(): Promise<void> {
    if (!this.running) return;
    const ok = await fetch(`http://127.0.0.1:${this.port}/healthz`, { signal: AbortSignal.timeout(1_500) })
      .then((r) => r.status === 200)
      .catch(() => false);
    if (ok) {
      this.#answered = true;
      this.#failures = 0;
      return;
    }
    if (!this.#answered || ++this.#failures < 3) return;
    this.#failures = 0;
    this.#answered = false;
    this.restarts.liveness++;
    this.#log(`[supervisor] sync ${this.name} failed liveness 3 times; killing it`);
    this.#child?.kill('SIGKILL');
  }

  /** SIGKILL: the supervisor restarts it a second later. */
  kill(): void {
    this.#answered = false;
    this.#child?.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    this.#wanted = false;
    if (this.#probeTimer !== undefined) clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
    if (this.#child !== undefined) await stopChild(this.#child, 15_000);
  }

  async isLeader(): Promise<boolean> {
    const metrics = await fetch(`http://127.0.0.1:${this.port}/metrics`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.text());
    return /^edge_registrar_sync_leader 1$/m.test(metrics);
  }

  async waitLeader(timeoutMs = 60_000): Promise<void> {
    await until(`sync ${this.name} to lead`, timeoutMs, () => this.isLeader());
  }

  async waitServing(timeoutMs = 60_000): Promise<void> {
    await until(`sync ${this.name} to serve`, timeoutMs, async () => (await fetch(`http://127.0.0.1:${this.port}/readyz`, { signal: AbortSignal.timeout(2_000) })).status === 200);
  }
}

export interface StackOptions {
  binaries: KubeBinaries;
  redisServer: string;
  dir: string;
  log: Log;
}

export class SoakStack {
  cluster!: StartedCluster;
  redis!: RunningRedis;
  readonly replicas = new Map<string, SyncReplica>();
  #webhook: ChildProcess | undefined;
  #webhookPort = 0;
  #ca!: PemPair;
  readonly #options: StackOptions;

  private constructor(options: StackOptions) {
    this.#options = options;
  }

  static async start(options: StackOptions): Promise<SoakStack> {
    const stack = new SoakStack(options);
    await stack.startCluster();
    await mkdir(join(options.dir, 'redis'), { recursive: true });
    stack.redis = await startRedis({ binary: options.redisServer, dataDir: join(options.dir, 'redis') });
    await stack.#startWebhookWithCertificates();
    for (const name of ['a', 'b']) {
      const port = await freePort();
      stack.replicas.set(name, new SyncReplica(name, port, () => stack.#spawnSync(name, port), options.log));
    }
    stack.replica('a').start();
    await stack.replica('a').waitLeader();
    return stack;
  }

  replica(name: string): SyncReplica {
    const replica = this.replicas.get(name);
    if (replica === undefined) throw new Error(`no replica ${name}`);
    return replica;
  }

  get webhookRunning(): boolean {
    return this.#webhook !== undefined && this.#webhook.exitCode === null && this.#webhook.signalCode === null;
  }

  // --- the API server

  async startCluster(): Promise<void> {
    this.cluster = await startCluster({ binaries: this.#options.binaries, dir: join(this.#options.dir, 'kube'), resume: true, withControllerManager: false });
  }

  async stopCluster(): Promise<void> {
    await this.cluster.stop();
  }

  pauseCluster(): void {
    pause(this.cluster.process);
  }

  resumeCluster(): void {
    resume(this.cluster.process);
  }

  adminKubeconfig(): string {
    return kubeconfigFor(this.cluster.state, 'admin');
  }

  // --- Redis

  async restartRedis(): Promise<void> {
    const port = this.redis.port;
    await this.redis.stop();
    this.redis = await startRedis({ binary: this.#options.redisServer, port, dataDir: join(this.#options.dir, 'redis') });
  }

  pauseRedis(): void {
    pause(this.redis.process);
  }

  resumeRedis(): void {
    resume(this.redis.process);
  }

  // --- the webhook

  async #startWebhookWithCertificates(): Promise<void> {
    this.#ca = createCertificateAuthority('edge-registrar-soak-ca', 30);
    await writeCertificateFiles(this.#certDir(), this.#ca, this.#newServingCertificate(), true);
    this.#webhookPort = await freePort();
    await this.startWebhook();
    const registered = await this.cluster.kubectl('admin', ['apply', '-f', '-'], await localWebhookManifests(this.#webhookPort, this.#ca.cert));
    if (registered.code !== 0) throw new Error(`registering the webhook failed: ${registered.stderr}`);
    const probe = 'apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vps-jp-99, namespace: airport-prod}\nspec: {address: 10.9.9.9}\n';
    await until('the API server to call the webhook', 30_000, async () => (await this.cluster.kubectl('admin', ['apply', '--dry-run=server', '-f', '-'], probe)).stderr.includes('address.public-unicast'));
  }

  #certDir(): string {
    return join(this.#options.dir, 'webhook-certs');
  }

  #newServingCertificate(): PemPair {
    return createServingCertificate({ ca: this.#ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 });
  }

  async startWebhook(): Promise<void> {
    const certDir = this.#certDir();
    this.#webhook = spawnCli(
      'webhook',
      [
        '--host', '127.0.0.1',
        '--port', String(this.#webhookPort),
        '--metrics-port', '0',
        '--tls-cert', join(certDir, 'tls.crt'),
        '--tls-key', join(certDir, 'tls.key'),
        '--kubeconfig', kubeconfigFor(this.cluster.state, 'webhook'),
        '--shutdown-delay', '0',
      ],
      join(this.#options.dir, 'webhook.log'),
      { append: true },
    );
    await until('the webhook to be ready', 60_000, async () => (await httpsRequest(this.#webhookPort, { path: '/readyz', ca: this.#ca.cert })).status === 200);
  }

  async stopWebhook(): Promise<void> {
    if (this.#webhook !== undefined) await stopChild(this.#webhook, 15_000);
  }

  /**
   * A new serving certificate (new key, same CA) written over the files, as cert-manager
   * renews one; resolves once the running webhook serves it, so the rotation is proven.
   */
  async rotateWebhookCertificate(): Promise<void> {
    const serving = this.#newServingCertificate();
    await writeCertificateFiles(this.#certDir(), this.#ca, serving, true);
    const fingerprint = new X509Certificate(serving.cert).fingerprint256;
    await until('the webhook to serve the rotated certificate', 30_000, async () => (await httpsRequest(this.#webhookPort, { path: '/readyz', ca: this.#ca.cert })).peerCertificateFingerprint === fingerprint);
  }

  // --- sync replicas

  #spawnSync(name: string, port: number): ChildProcess {
    const flags = { kubeconfig: kubeconfigFor(this.cluster.state, 'sync'), redisUrl: this.redis.url, consumer: `replica-${name}`, port: String(port) };
    // Liveness at 20 s (production: 120 s) so a hung replica is replaced within the run;
    // resync every 15 s and orphans removed after 5 s, so drift repair happens in a short run.
    const overrides = { stallMs: 20_000, resyncIntervalMs: 15_000, orphanGraceMs: 5_000, metricsRefreshMs: 2_000 };
    return spawnNode(SYNC_PROCESS, [], join(this.#options.dir, `sync-${name}.log`), {
      append: true,
      env: { ...process.env, SYNC_FLAGS: JSON.stringify(flags), SYNC_OVERRIDES: JSON.stringify(overrides) },
    });
  }

  async stop(): Promise<void> {
    // Anything left paused by an interrupted fault must run again to stop.
    for (const child of [this.cluster.process, this.redis.process]) if (child.exitCode === null) resume(child);
    await Promise.all([...this.replicas.values()].map((r) => r.stop()));
    await this.stopWebhook();
    await this.redis.stop();
    await this.cluster.stop();
  }
}
