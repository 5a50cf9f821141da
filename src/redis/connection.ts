/**
 * Redis connections from one configuration: standalone (redis:// or rediss://, ACL user and
 * password, a CA file for TLS), Sentinel, or Redis Cluster. Blocking stream reads get a
 * connection of their own with maxRetriesPerRequest null (a blocked XREADGROUP must not be
 * failed by ioredis's retry limit); commands get another.
 *
 * In Cluster mode the commands connection is an ioredis Cluster, handed out typed as a Redis:
 * it has the same commands, and the daemon uses nothing else of a client (no SELECT, no SCAN
 * across the keyspace, no pub/sub). Every key it touches is in the stream's hash slot
 * (redis/keys.ts), so every script, transaction and pipeline goes to one node, and ioredis
 * follows MOVED and ASK redirections and retries TRYAGAIN and CLUSTERDOWN.
 */
import { readFileSync } from 'node:fs';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config/redis.ts';

export interface ConnectionDeadlines {
  /** Fails a command not answered in this long (commands only: a blocking read waits by design). */
  commandTimeoutMs?: number;
}

export function redisOptions(config: RedisConfig, purpose: 'commands' | 'blocking', deadlines: ConnectionDeadlines = {}): RedisOptions {
  const url = new URL(config.url);
  const tlsWanted = config.tls || url.protocol === 'rediss:';
  const tls = tlsWanted ? { ...(config.tlsCaFile !== undefined ? { ca: readFileSync(config.tlsCaFile) } : {}) } : undefined;
  const common: RedisOptions = {
    username: config.username ?? (url.username !== '' ? decodeURIComponent(url.username) : undefined),
    password: config.password ?? (url.password !== '' ? decodeURIComponent(url.password) : undefined),
    db: url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0,
    connectionName: `edge-registrar-${purpose}`,
    enableAutoPipelining: purpose === 'commands',
    // Reconnect forever with a capped delay; callers decide what an outage means.
    retryStrategy: (attempt) => Math.min(200 * 2 ** Math.min(attempt, 6), 5_000),
    maxRetriesPerRequest: purpose === 'blocking' ? null : 3,
    enableOfflineQueue: purpose === 'blocking',
    lazyConnect: true,
    // TCP keep-alive finds a peer that vanished (a failed-over node, a dropped NAT entry)
    // on an idle connection; a connect that hangs is given up and retried.
    keepAlive: 10_000,
    connectTimeout: 10_000,
    ...(purpose === 'commands' && deadlines.commandTimeoutMs !== undefined ? { commandTimeout: deadlines.commandTimeoutMs } : {}),
    ...(tls !== undefined ? { tls } : {}),
  };
  if (config.sentinels !== undefined) {
    return {
      ...common,
      sentinels: config.sentinels,
      name: config.sentinelName,
      ...(config.sentinelPassword !== undefined ? { sentinelPassword: config.sentinelPassword } : {}),
      ...(tls !== undefined ? { enableTLSForSentinelMode: true } : {}),
    };
  }
  return { ...common, host: url.hostname, port: url.port === '' ? 6379 : Number(url.port) };
}

/** Whether the configuration names a Redis Cluster. */
export function isCluster(config: RedisConfig): boolean {
  return config.clusterNodes !== undefined;
}

/** The options of one node of the cluster (credentials, TLS, timeouts), without an address. */
export function clusterNodeOptions(config: RedisConfig, purpose: 'commands' | 'blocking', deadlines: ConnectionDeadlines = {}): RedisOptions {
  const { host: _host, port: _port, db: _db, ...options } = redisOptions({ ...config, sentinels: undefined }, purpose, deadlines);
  return options;
}

export function clusterOptions(config: RedisConfig, purpose: 'commands' | 'blocking', deadlines: ConnectionDeadlines = {}): ClusterOptions {
  const node = clusterNodeOptions(config, purpose, deadlines);
  return {
    redisOptions: node,
    lazyConnect: true,
    enableAutoPipelining: purpose === 'commands',
    enableOfflineQueue: purpose === 'blocking',
    // As for one server: reconnect for ever with a capped delay; callers decide what an outage means.
    clusterRetryStrategy: (attempt) => Math.min(200 * 2 ** Math.min(attempt, 6), 5_000),
    // A failover or a slot migration: ask again soon, a bounded number of times.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
    maxRedirections: 16,
    // Learn a new slot owner within seconds even when no command is redirected.
    slotsRefreshInterval: 5_000,
    slotsRefreshTimeout: 2_000,
    // TLS with a cluster's announced addresses (ElastiCache's, say): keep the names as given,
    // so the certificate's names are checked against them.
    ...(node.tls !== undefined ? { dnsLookup: (address: string, callback: (err: NodeJS.ErrnoException | null, address: string) => void) => { callback(null, address); } } : {}),
  };
}

export function createRedis(config: RedisConfig, purpose: 'commands' | 'blocking', deadlines: ConnectionDeadlines = {}): Redis {
  if (config.clusterNodes !== undefined) return new Cluster(config.clusterNodes, clusterOptions(config, purpose, deadlines)) as unknown as Redis;
  return new Redis(redisOptions(config, purpose, deadlines));
}

/**
 * Connects, or fails within `ms`: `connect()` alone may never settle. ioredis's Cluster
 * resolves it only on "ready", and when its ready check finds the cluster down
 * (`cluster_state:fail`, a primary not yet replaced) it reconnects with a new promise and drops
 * the first one; a plain connection made while a node is being promoted was seen to hang the
 * same way. On the deadline the client is disconnected and the error names what was reached for.
 */
export async function connectWithin(client: Redis, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const connecting = client.connect();
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => { reject(new Error(`${what}: not connected and ready within ${ms / 1000} s`)); }, ms);
  });
  try {
    await Promise.race([connecting, deadline]);
  } catch (error) {
    // Nothing waits on the dropped promise any more; it must not surface as unhandled.
    connecting.catch(() => undefined);
    client.disconnect();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** How long a one-shot command (status, doctor, publish, dlq ...) waits for Redis to be connected and ready. */
const COMMAND_CONNECT_DEADLINE_MS = 10_000;

/**
 * A commands connection for one piece of work, closed after it: connected within the deadline
 * or failing with why, its connection errors left to the command that fails.
 */
export async function withRedis<T>(config: RedisConfig, deadlines: ConnectionDeadlines, use: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = createRedis(config, 'commands', deadlines);
  redis.on('error', () => undefined); // reported by the command that fails
  try {
    await connectWithin(redis, COMMAND_CONNECT_DEADLINE_MS, 'Redis');
    return await use(redis);
  } finally {
    redis.disconnect();
  }
}
