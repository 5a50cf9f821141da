/**
 * The system under soak, every part a real process on 127.0.0.1: kube-apiserver with etcd
 * (kube-harness, resumable so a stop and start is the same cluster), redis-server with AOF
 * (or, with `redisMode: 'cluster'`, a Redis Cluster of 3 primaries and 3 replicas),
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
import { Cluster, Redis } from 'ioredis';
import { RunningRedisCluster } from '../harness/redis-cluster.ts';
import { freePort, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { kubeconfigThroughProxy, startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.ts';
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
  /**
   * Restarts by cause: stopped by a fault's SIGTERM, exited on its own (a crash: the verdict
   * fails on any), or killed after failing liveness.
   */
  readonly restarts = { terminated: 0, crashed: 0, liveness: 0 };
  /** Each crash: when, and the exit code or signal. */
  readonly crashes: string[] = [];
  #terminating = false;
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
      // Killed by a fault injector (SIGKILL), stopped by one (SIGTERM), or crashed: the
      // supervisor brings it back either way, as a kubelet would.
      const how = String(code ?? signal ?? '?');
      if (this.#terminating) {
        this.restarts.terminated++;
        this.#log(`[supervisor] sync ${this.name} exited (${how}) after SIGTERM; restarting`);
      } else if (signal !== 'SIGKILL') {
        this.restarts.crashed++;
        this.crashes.push(`sync ${this.name} exited on its own (${how}) at ${new Date().toISOString()}`);
        this.#log(`[supervisor] sync ${this.name} exited on its own (${how}): a crash; restarting`);
      }
      this.#terminating = false;
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

  /**
   * SIGTERM, as Kubernetes stops a pod: resolves once it has exited (within `graceMs`, or the
   * result is 'killed'); the supervisor then restarts it, as a Deployment replaces the pod.
   */
  async terminate(graceMs = 30_000): Promise<{ result: 'exited' | 'killed'; ms: number }> {
    this.#answered = false;
    const started = Date.now();
    if (this.#child === undefined) return { result: 'exited', ms: 0 };
    this.#terminating = true;
    const result = await stopChild(this.#child, graceMs);
    return { result, ms: Date.now() - started };
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

export type RedisMode = 'standalone' | 'cluster';

export interface StackOptions {
  binaries: KubeBinaries;
  redisServer: string;
  redisMode: RedisMode;
  dir: string;
  log: Log;
}

/**
 * Where one replica reaches Redis and the API server: through proxies that can cut it off.
 * A cluster's clients connect to the addresses its nodes announce, so on a cluster only the
 * API server is proxied.
 */
interface ReplicaNetwork {
  redis: TcpProxy | undefined;
  api: TcpProxy;
  kubeconfig: string;
}

export class SoakStack {
  cluster!: StartedCluster;
  #redis: RunningRedis | undefined;
  #redisCluster: RunningRedisCluster | undefined;
  readonly replicas = new Map<string, SyncReplica>();
  readonly #networks = new Map<string, ReplicaNetwork>();
  #webhook: ChildProcess | undefined;
  #webhookPort = 0;
  #ca!: PemPair;
  readonly #options: StackOptions;

  private constructor(options: StackOptions) {
    this.#options = options;
  }

  /** Starts every part; if one fails to start, stops those already running before it throws. */
  static async start(options: StackOptions): Promise<SoakStack> {
    const stack = new SoakStack(options);
    try {
      await stack.#startParts();
    } catch (error) {
      await stack.stop().catch(() => undefined);
      throw error;
    }
    return stack;
  }

  async #startParts(): Promise<void> {
    const options = this.#options;
    await this.startCluster();
    await mkdir(join(options.dir, 'redis'), { recursive: true });
    if (options.redisMode === 'cluster') this.#redisCluster = await RunningRedisCluster.start({ binary: options.redisServer, dir: join(options.dir, 'redis'), nodeTimeoutMs: 2_000 });
    else this.#redis = await startRedis({ binary: options.redisServer, dataDir: join(options.dir, 'redis') });
    await this.#startWebhookWithCertificates();
    for (const name of ['a', 'b']) {
      const port = await freePort();
      const redisProxy = this.#redis === undefined ? undefined : await startTcpProxy({ host: '127.0.0.1', port: this.#redis.port });
      const { kubeconfig, proxy: apiProxy } = await kubeconfigThroughProxy(kubeconfigFor(this.cluster.state, 'sync'));
      this.#networks.set(name, { redis: redisProxy, api: apiProxy, kubeconfig });
      this.replicas.set(name, new SyncReplica(name, port, () => this.#spawnSync(name, port), options.log));
    }
    this.replica('a').start();
    await this.replica('a').waitLeader();
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

  get redisMode(): RedisMode {
    return this.#options.redisMode;
  }

  /**
   * A client of the soak's Redis for sigma-api's side and the verdict: it never re-sends a
   * command after a reconnect (a re-sent XADD would be a second event the model does not know).
   */
  redisClient(): Redis {
    if (this.#redisCluster !== undefined) {
      return new Cluster(this.#redisCluster.seeds, { redisOptions: { autoResendUnfulfilledCommands: false }, retryDelayOnFailover: 200, retryDelayOnClusterDown: 200, slotsRefreshInterval: 1_000 }) as unknown as Redis;
    }
    return new Redis(this.#standalone().url, { maxRetriesPerRequest: null, autoResendUnfulfilledCommands: false });
  }

  #standalone(): RunningRedis {
    if (this.#redis === undefined) throw new Error('this fault needs standalone Redis (the soak runs on a Redis Cluster)');
    return this.#redis;
  }

  /** The Redis Cluster, for the cluster faults. */
  redisCluster(): RunningRedisCluster {
    if (this.#redisCluster === undefined) throw new Error('this fault needs a Redis Cluster (--redis cluster)');
    return this.#redisCluster;
  }

  async restartRedis(): Promise<void> {
    const { port } = this.#standalone();
    await this.#standalone().stop();
    this.#redis = await startRedis({ binary: this.#options.redisServer, port, dataDir: join(this.#options.dir, 'redis') });
  }

  pauseRedis(): void {
    pause(this.#standalone().process);
  }

  resumeRedis(): void {
    resume(this.#standalone().process);
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
        // The API server calls from 127.0.0.1, as the chart tells the webhook its addresses.
        '--api-server-cidrs', '127.0.0.1/32',
      ],
      join(this.#options.dir, 'webhook.log'),
      { append: true },
    );
    await until('the webhook to be ready', 60_000, async () => (await httpsRequest(this.#webhookPort, { path: '/readyz', ca: this.#ca.cert })).status === 200);
  }

  /** Where the webhook listens, and the file of the CA its certificate chains to. */
  webhookEndpoint(): { port: number; caFile: string } {
    return { port: this.#webhookPort, caFile: join(this.#certDir(), 'ca.crt') };
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

  // --- sync replicas and their network

  #network(name: string): ReplicaNetwork {
    const network = this.#networks.get(name);
    if (network === undefined) throw new Error(`no network for replica ${name}`);
    return network;
  }

  /**
   * Cuts a replica off from Redis and the API server, silently, as a network partition does:
   * its connections stay open and what it sends waits (in the proxies) to arrive when the
   * partition heals, as retransmitted packets do. Its probes and metrics still answer.
   */
  partition(name: string): void {
    const { redis, api } = this.#network(name);
    this.#proxied(redis).freeze();
    api.freeze();
  }

  heal(name: string): void {
    const { redis, api } = this.#network(name);
    this.#proxied(redis).thaw();
    api.thaw();
  }

  /** Breaks a replica's Redis connections now (a reset, a failed NAT entry): it sees them close and reconnects. */
  cutRedis(name: string): void {
    this.#proxied(this.#network(name).redis).dropConnections();
  }

  #proxied(redis: TcpProxy | undefined): TcpProxy {
    if (redis === undefined) throw new Error("this fault cuts a replica's Redis connections, which are proxied only with standalone Redis");
    return redis;
  }

  /** The log of a replica so far. */
  replicaLogFile(name: string): string {
    return join(this.#options.dir, `sync-${name}.log`);
  }

  #spawnSync(name: string, port: number): ChildProcess {
    const network = this.#network(name);
    const redis = network.redis === undefined ? { redisClusterNodes: this.redisCluster().seedList } : { redisUrl: `redis://127.0.0.1:${network.redis.port}` };
    const flags = { kubeconfig: network.kubeconfig, ...redis, consumer: `replica-${name}`, port: String(port) };
    // Liveness at 20 s (production: 120 s) so a hung replica is replaced within the run;
    // resync every 15 s and orphans removed after 5 s, so drift repair happens in a short run.
    // Poison after 2 interrupted attempts and a stray check every second: a short run reaches
    // the limits a long outage would, so a valid event counted as poison would show.
    const overrides = { stallMs: 20_000, resyncIntervalMs: 15_000, orphanGraceMs: 5_000, metricsRefreshMs: 2_000, maxInterruptedAttempts: 2, strayCheckMs: 1_000 };
    return spawnNode(SYNC_PROCESS, [], this.replicaLogFile(name), {
      append: true,
      env: { ...process.env, SYNC_FLAGS: JSON.stringify(flags), SYNC_OVERRIDES: JSON.stringify(overrides) },
    });
  }

  async stop(): Promise<void> {
    // Anything left paused by an interrupted fault must run again to stop.
    // (`cluster` is unset when the API server itself failed to start.)
    const cluster = this.cluster as StartedCluster | undefined;
    for (const child of [cluster?.process, this.#redis?.process]) if (child !== undefined && child.exitCode === null) resume(child);
    for (const { redis, api } of this.#networks.values()) {
      redis?.thaw();
      api.thaw();
    }
    await Promise.all([...this.replicas.values()].map((r) => r.stop()));
    await Promise.all([...this.#networks.values()].flatMap(({ redis, api }) => [...(redis === undefined ? [] : [redis.stop()]), api.stop()]));
    await this.stopWebhook();
    await this.#redis?.stop();
    await this.#redisCluster?.stop();
    await cluster?.stop();
  }
}
