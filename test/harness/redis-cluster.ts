/**
 * A real Redis Cluster for tests and the soak: `redis-server --cluster-enabled yes` processes
 * on free 127.0.0.1 ports, joined by `redis-cli --cluster create` (primaries and their
 * replicas), with AOF so a killed node comes back with its data. It can do to the cluster what
 * an operator or a crash does: a manual failover of a primary's replica (`CLUSTER FAILOVER`),
 * a SIGKILL of a primary (its replica is promoted after the node timeout), a node restarted
 * (it rejoins, as a replica of whoever took over), and a slot moved to another primary with
 * `redis-cli --cluster reshard`.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Cluster, Redis } from 'ioredis';
import { hashSlot, slotOwner } from '../../src/redis/cluster-slot.ts';
import { distinctFreePorts, spawnUntilReady, stopServer } from './redis-server.ts';

/**
 * `client`'s own connection to the primary serving `key`'s slot: what a producer that WAITs for
 * a replica needs, since WAIT counts the writes of the connection it is sent on. 'stale'
 * refreshes the slot map first (after a failover or a failed write).
 */
export async function primaryConnection(client: Cluster, key: string, knowledge: 'current' | 'stale'): Promise<Redis> {
  const owner = await slotOwner(client as unknown as Redis, key, knowledge);
  const node = client.nodes('master').find((n) => n.options.port === owner.port);
  if (node === undefined) throw new Error(`no connection to the primary of ${key}'s slot (port ${owner.port}) yet`);
  return node;
}

const exec = promisify(execFile);

export interface ClusterNode {
  port: number;
  process: ChildProcess;
}

export interface NodeView {
  id: string;
  port: number;
  role: 'master' | 'slave';
  /** For a replica: its primary's id. */
  primaryId?: string;
  slots: [number, number][];
  connected: boolean;
  failed: boolean;
}

export interface StartRedisClusterOptions {
  binary: string;
  dir: string;
  primaries?: number;
  replicasPerPrimary?: number;
  /** How long a node may be unreachable before it counts as failed and its replica is promoted. */
  nodeTimeoutMs?: number;
  log?: (line: string) => void;
}

export class RunningRedisCluster {
  readonly nodes = new Map<number, ClusterNode>();
  readonly #options: Required<StartRedisClusterOptions>;
  readonly #cli: string;

  private constructor(options: Required<StartRedisClusterOptions>) {
    this.#options = options;
    this.#cli = options.binary.replace(/redis-server$/, 'redis-cli');
  }

  static async start(options: StartRedisClusterOptions): Promise<RunningRedisCluster> {
    const cluster = new RunningRedisCluster({ primaries: 3, replicasPerPrimary: 1, nodeTimeoutMs: 2_000, log: () => undefined, ...options });
    const count = cluster.#options.primaries * (1 + cluster.#options.replicasPerPrimary);
    // Every node's port and cluster bus port chosen together, all distinct. The bus port left
    // to its default (port + 10000) once fell on another node's port, chosen free before the
    // first node took it as its bus: that node exited 1 at start ("bind: Address already in
    // use"; CI, 2026-12-05).
    const chosen = await distinctFreePorts(count * 2);
    const ports = chosen.slice(0, count);
    ports.forEach((port, i) => cluster.#busPorts.set(port, chosen[count + i]!));
    try {
      // Settled, not raced: a node still starting when another fails must be in `nodes` for stop().
      const started = await Promise.allSettled(ports.map((port) => cluster.startNode(port)));
      const failed = started.find((result) => result.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      await cluster.cli(['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(cluster.#options.replicasPerPrimary), '--cluster-yes']);
      await cluster.waitHealthy(30_000);
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** Seed nodes for a client, as REDIS_CLUSTER_NODES spells them. */
  get seeds(): { host: string; port: number }[] {
    return [...this.nodes.keys()].map((port) => ({ host: '127.0.0.1', port }));
  }

  get seedList(): string {
    return this.seeds.map((s) => `${s.host}:${s.port}`).join(',');
  }

  /** Each node's cluster bus port, kept across its restarts. */
  readonly #busPorts = new Map<number, number>();

  /** Starts (or restarts, with its node file and AOF) the node on `port`. */
  async startNode(port: number): Promise<void> {
    const dir = join(this.#options.dir, String(port));
    await mkdir(dir, { recursive: true });
    const busPort = this.#busPorts.get(port);
    if (busPort === undefined) throw new Error(`no cluster bus port chosen for the node on ${port}`);
    const args = ['--bind', '127.0.0.1', '--port', String(port), '--cluster-port', String(busPort), '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', String(this.#options.nodeTimeoutMs), '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--repl-diskless-sync-delay', '0', '--daemonize', 'no', '--loglevel', 'notice', '--logfile', join(dir, 'redis.log')];
    const child = await spawnUntilReady(this.#options.binary, args, `cluster node on port ${port} did not answer PING`, async () => (await this.cli(['-p', String(port), 'ping'])).trim() === 'PONG');
    this.nodes.set(port, { port, process: child });
  }

  async cli(args: string[]): Promise<string> {
    const withHost = args[0] === '--cluster' ? args : ['-h', '127.0.0.1', ...args];
    const { stdout } = await exec(this.#cli, withHost, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  }

  /** The cluster as `port`'s node sees it (CLUSTER NODES). */
  async view(port = this.#anyLivePort()): Promise<NodeView[]> {
    const text = await this.cli(['-p', String(port), 'cluster', 'nodes']);
    return text
      .trim()
      .split('\n')
      .map((line) => {
        const [id = '', address = '', flags = '', primaryId = '-', , , , link = '', ...slotSpecs] = line.split(' ');
        const flagList = flags.split(',');
        const slots = slotSpecs.filter((s) => !s.startsWith('[')).map((s) => {
          const [from, to] = s.split('-').map(Number);
          return [from ?? 0, to ?? from ?? 0] as [number, number];
        });
        return {
          id,
          port: Number(address.split('@')[0]?.split(':')[1]),
          role: flagList.includes('master') ? 'master' : 'slave',
          ...(primaryId !== '-' ? { primaryId } : {}),
          slots,
          connected: link === 'connected',
          failed: flagList.includes('fail') || flagList.includes('fail?'),
        };
      });
  }

  /** The primary serving `key`'s slot now. */
  async primaryFor(key: string): Promise<NodeView> {
    const slot = hashSlot(key);
    const primary = (await this.view()).find((n) => n.role === 'master' && !n.failed && n.slots.some(([a, b]) => a <= slot && slot <= b));
    if (primary === undefined) throw new Error(`no primary serves slot ${slot}`);
    return primary;
  }

  async replicaOf(primary: NodeView): Promise<NodeView> {
    const replica = (await this.view()).find((n) => n.role === 'slave' && n.primaryId === primary.id && !n.failed);
    if (replica === undefined) throw new Error(`primary ${primary.port} has no live replica`);
    return replica;
  }

  /** Every running node says cluster_state ok with all slots served, every replica is in sync with its primary, and none is seen failed or disconnected. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const states = await Promise.all([...this.#livePorts()].map(async (port) => {
        const info = await this.cli(['-p', String(port), 'cluster', 'info']).catch(() => '');
        // A replica that has not finished its first sync cannot take over: wait for its link too.
        const replication = await this.cli(['-p', String(port), 'info', 'replication']).catch(() => '');
        const synced = /role:master/.test(replication) || /master_link_status:up/.test(replication);
        return synced && /cluster_state:ok/.test(info) && /cluster_slots_assigned:16384/.test(info) && /cluster_slots_ok:16384/.test(info);
      }));
      const view = await this.view().catch(() => []);
      // Every primary with slots has its replicas, as this node sees it (gossip takes a moment after create and failovers).
      const replicated = view.filter((n) => n.role === 'master' && n.slots.length > 0).every((m) => view.filter((r) => r.primaryId === m.id).length >= Math.min(1, this.#options.replicasPerPrimary));
      if (states.every(Boolean) && replicated && view.length >= this.#livePorts().length && view.every((n) => !n.failed && n.connected)) return;
      last = JSON.stringify(view.map((n) => [n.port, n.role, n.failed]));
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the Redis Cluster did not become healthy within ${timeoutMs} ms: ${last}`);
  }

  /** A manual failover of `key`'s primary: its replica takes over in agreement with it. Returns the new primary's port. */
  async failover(key: string): Promise<number> {
    const primary = await this.primaryFor(key);
    const replica = await this.replicaOf(primary);
    await this.cli(['-p', String(replica.port), 'cluster', 'failover']);
    await this.#waitPrimary(key, replica.port, 30_000);
    await this.waitHealthy();
    return replica.port;
  }

  /** SIGKILL of `key`'s primary; resolves once its replica serves the slot. Returns [killed port, new primary port]. */
  async killPrimary(key: string): Promise<[number, number]> {
    const primary = await this.primaryFor(key);
    const replica = await this.replicaOf(primary);
    const node = this.nodes.get(primary.port);
    if (node === undefined) throw new Error(`no process for port ${primary.port}`);
    node.process.kill('SIGKILL');
    await new Promise<void>((resolve) => {
      if (node.process.exitCode !== null || node.process.signalCode !== null) resolve();
      else node.process.once('exit', () => { resolve(); });
    });
    this.nodes.delete(primary.port);
    await this.#waitPrimary(key, replica.port, 60_000);
    return [primary.port, replica.port];
  }

  /**
   * Moves `key`'s slot to another primary with `redis-cli --cluster reshard` (which moves the
   * lowest slots of the source first, so this moves every slot of the source up to the key's).
   * Returns the new primary's port.
   */
  async reshard(key: string): Promise<number> {
    const slot = hashSlot(key);
    const view = await this.view();
    const source = await this.primaryFor(key);
    const target = view.find((n) => n.role === 'master' && !n.failed && n.id !== source.id);
    if (target === undefined) throw new Error('no other primary to move the slot to');
    const owned = source.slots.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i)).sort((x, y) => x - y);
    const count = owned.indexOf(slot) + 1;
    this.#options.log(`[redis-cluster] resharding ${count} slots (up to ${slot}) from ${source.port} to ${target.port}`);
    await this.cli(['--cluster', 'reshard', `127.0.0.1:${source.port}`, '--cluster-from', source.id, '--cluster-to', target.id, '--cluster-slots', String(count), '--cluster-yes', '--cluster-pipeline', '100']);
    await this.#waitPrimary(key, target.port, 30_000);
    return target.port;
  }

  /**
   * A slot migration held half-way, as a slow `redis-cli --cluster reshard` holds it: `key`'s
   * slot set MIGRATING on its primary and IMPORTING on another, every key of the slot moved
   * (MIGRATE), then `whileMigrating` runs (the source answers ASK for every key, the target
   * serves them to clients that send ASKING), and the slot is handed to the target. Returns the
   * target's port.
   */
  async holdSlotMigrating(key: string, whileMigrating: () => Promise<void>): Promise<number> {
    const slot = String(hashSlot(key));
    const source = await this.primaryFor(key);
    const target = (await this.view()).find((n) => n.role === 'master' && !n.failed && n.id !== source.id);
    if (target === undefined) throw new Error('no other primary to move the slot to');
    await this.cli(['-p', String(target.port), 'cluster', 'setslot', slot, 'importing', source.id]);
    await this.cli(['-p', String(source.port), 'cluster', 'setslot', slot, 'migrating', target.id]);
    for (;;) {
      const keys = (await this.cli(['-p', String(source.port), 'cluster', 'getkeysinslot', slot, '100'])).split('\n').filter((k) => k !== '');
      if (keys.length === 0) break;
      await this.cli(['-p', String(source.port), 'migrate', '127.0.0.1', String(target.port), '', '0', '5000', 'keys', ...keys]);
    }
    try {
      await whileMigrating();
    } finally {
      // Handed over on the target first, then the source, then every other primary (as redis-cli does).
      for (const port of [target.port, source.port, ...(await this.view()).filter((n) => n.role === 'master' && n.port !== target.port && n.port !== source.port).map((n) => n.port)]) {
        await this.cli(['-p', String(port), 'cluster', 'setslot', slot, 'node', target.id]);
      }
    }
    await this.#waitPrimary(key, target.port, 30_000);
    return target.port;
  }

  /**
   * A failover that loses writes the primary had not replicated: `key`'s replica is paused
   * (SIGSTOP) so replication stalls, `whilePaused` runs against the primary alone (given its
   * port: the paused node answers nothing, so ask the primary), then the
   * primary is SIGKILLed and the replica resumed and promoted (CLUSTER FAILOVER TAKEOVER, since
   * its primary is gone), and the old primary restarted to rejoin as a replica. Whatever the
   * primary took while its replica was paused is lost. Returns the new primary's port.
   */
  async failoverLosingWrites(key: string, whilePaused: (primaryPort: number) => Promise<void>): Promise<number> {
    const primary = await this.primaryFor(key);
    const replica = await this.replicaOf(primary);
    const replicaNode = this.nodes.get(replica.port);
    const primaryNode = this.nodes.get(primary.port);
    if (replicaNode === undefined || primaryNode === undefined) throw new Error('no process for the primary or its replica');
    replicaNode.process.kill('SIGSTOP');
    try {
      await whilePaused(primary.port);
    } finally {
      primaryNode.process.kill('SIGKILL');
      await new Promise<void>((resolve) => {
        if (primaryNode.process.exitCode !== null || primaryNode.process.signalCode !== null) resolve();
        else primaryNode.process.once('exit', () => { resolve(); });
      });
      this.nodes.delete(primary.port);
      replicaNode.process.kill('SIGCONT');
    }
    await this.cli(['-p', String(replica.port), 'cluster', 'failover', 'takeover']);
    await this.#waitPrimary(key, replica.port, 60_000);
    await this.startNode(primary.port);
    await this.waitHealthy(60_000);
    return replica.port;
  }

  async #waitPrimary(key: string, port: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const owner = await this.primaryFor(key).catch(() => undefined);
      if (owner?.port === port) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`port ${port} did not become the primary of ${key}'s slot within ${timeoutMs} ms`);
  }

  #livePorts(): number[] {
    return [...this.nodes.keys()];
  }

  #anyLivePort(): number {
    const port = this.#livePorts()[0];
    if (port === undefined) throw new Error('no node of the cluster is running');
    return port;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => stopServer(n.process)));
    this.nodes.clear();
  }
}
