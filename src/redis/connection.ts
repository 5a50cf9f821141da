/**
 * Redis connections from one configuration: standalone (redis:// or rediss://, ACL user and
 * password, a CA file for TLS) or Sentinel. Blocking stream reads get a connection of their
 * own with maxRetriesPerRequest null (a blocked XREADGROUP must not be failed by ioredis's
 * retry limit); commands get another.
 */
import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config.ts';

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

export function createRedis(config: RedisConfig, purpose: 'commands' | 'blocking', deadlines: ConnectionDeadlines = {}): Redis {
  return new Redis(redisOptions(config, purpose, deadlines));
}
