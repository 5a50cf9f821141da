/**
 * Redis (standalone, Sentinel or Cluster) and the stream, for the sync daemon and the tools
 * around it (`publish`, `backfill`, `dlq`, `migrate-keys`, `status`, `doctor`).
 */
import { z } from 'zod';
import { ENV, type Env, parseBoolean, parseHostPorts } from './env.ts';
import { parseWith } from './flags.ts';
import { withoutPassword } from '../util/redact.ts';
import { shellQuote } from '../util/shell-quote.ts';

export const redisSchema = z.object({
  url: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss:// (TLS)').default('redis://127.0.0.1:6379'),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  tls: z.boolean().default(false),
  tlsCaFile: z.string().min(1).optional(),
  /** Sentinel mode when set: host:port pairs; the master is found by `sentinelName`. */
  sentinels: z.array(z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) })).optional(),
  sentinelName: z.string().min(1).default('mymaster'),
  sentinelPassword: z.string().min(1).optional(),
  /**
   * Redis Cluster mode when set: seed nodes as host:port pairs (any few; the client learns the
   * rest). Credentials and TLS come from the URL and the settings above, as for one server.
   */
  clusterNodes: z.array(z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) })).min(1).optional(),
}).refine((c) => c.clusterNodes === undefined || c.sentinels === undefined, { message: 'Redis Cluster and Sentinel are different deployments: set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both', path: ['clusterNodes'] });

export const streamSchema = z.object({
  stream: z.string().min(1).default('sigma:vps-events'),
  group: z.string().min(1).default('edge-registrar'),
  /** Where each event's outcome is recorded; unset: `{<stream>}:outcomes` (redis/keys.ts). */
  outcomeStream: z.string().min(1).optional(),
});

export type RedisConfig = z.output<typeof redisSchema>;

export interface RedisFlags {
  redisUrl?: string | undefined;
  redisClusterNodes?: string | undefined;
  stream?: string | undefined;
  group?: string | undefined;
  outcomeStream?: string | undefined;
}

/** The stream, the consumer group and the outcome stream, as every Redis command reads them. */
export function streamInput(flags: RedisFlags, env: Env): Record<string, unknown> {
  return { stream: flags.stream ?? env[ENV.stream], group: flags.group ?? env[ENV.group], outcomeStream: flags.outcomeStream ?? env[ENV.outcomeStream] };
}

export function redisInput(flags: RedisFlags, env: Env): Record<string, unknown> {
  const url = flags.redisUrl ?? env[ENV.redisUrl];
  return Object.fromEntries(
    Object.entries({
      url,
      username: env[ENV.redisUsername],
      password: env[ENV.redisPassword],
      tls: parseBoolean(env[ENV.redisTls]),
      tlsCaFile: env[ENV.redisTlsCaFile],
      sentinels: parseHostPorts(env[ENV.redisSentinels]),
      clusterNodes: parseHostPorts(flags.redisClusterNodes ?? env[ENV.redisClusterNodes]),
      sentinelName: env[ENV.redisSentinelName],
      sentinelPassword: env[ENV.redisSentinelPassword],
    }).filter(([, v]) => v !== undefined && v !== ''),
  );
}

const publishSchema = z.object({ redis: redisSchema, ...streamSchema.shape });

export type PublishConfig = z.output<typeof publishSchema>;

export function publishConfig(flags: RedisFlags, env: Env): PublishConfig {
  return parseWith(publishSchema, { redis: redisInput(flags, env), ...streamInput(flags, env) });
}

/**
 * The Redis flags a command was given, to repeat in a command it prints for the user to run
 * (` --redis-url redis://host:6379 --stream s`), never with a password: the printed command
 * reads that from REDIS_PASSWORD, as every command does.
 */
export function redisFlagsToPrint(flags: RedisFlags): string {
  const parts: string[] = [];
  if (flags.redisUrl !== undefined) parts.push('--redis-url', shellQuote(withoutPassword(flags.redisUrl)));
  if (flags.redisClusterNodes !== undefined) parts.push('--redis-cluster-nodes', shellQuote(flags.redisClusterNodes));
  if (flags.stream !== undefined) parts.push('--stream', shellQuote(flags.stream));
  return parts.length > 0 ? ` ${parts.join(' ')}` : '';
}
