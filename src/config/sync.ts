/**
 * `edge-registrar sync`: the daemon's consumer, leader election, resync, dead letters,
 * outcomes, Kubernetes Events and Telemetry.
 */
import { z } from 'zod';
import { hashSlot } from '../redis/cluster-slot.ts';
import { type CommonFlags, commonInput, commonSchema, istioApiVersion, port } from './common.ts';
import { ENV, type Env, definedOnly, parseBoolean, secondsToMs } from './env.ts';
import { parseWith } from './flags.ts';
import { type TelemetryGatewayFlags, telemetryGatewayInput, telemetrySchema } from './mesh-telemetry.ts';
import { type RedisFlags, redisInput, redisSchema, streamInput, streamSchema } from './redis.ts';

const syncSchema = commonSchema.extend({
  redis: redisSchema,
  ...streamSchema.shape,
  /** This replica's name in the consumer group and in the Lease. */
  consumer: z.string().min(1),
  port: port.default(9090),
  telemetry: telemetrySchema.prefault({}),
  host: z.string().min(1).default('0.0.0.0'),
  istioApiVersion,
  batchSize: z.number().int().positive().default(200),
  /**
   * How long one XREADGROUP blocks. Shorter than leaseDuration − renewDeadline with room to
   * spare: a read issued at the end of a term has timed out in Redis before anyone else may lead.
   */
  blockMs: z.number().int().positive().default(2_000),
  /** How long the daemon waits at start for Redis to be connected and ready before it exits with the reason. */
  redisStartDeadlineMs: z.number().int().positive().default(30_000),
  /** How long past blockMs a read may take before its watchdog cuts it (blocked reads have hung after reconnects). */
  watchdogGraceMs: z.number().int().positive().default(10_000),
  /** Parallel VPSs within a batch; events of one VPS are always applied in order. */
  concurrency: z.coerce.number().int().positive().max(256).default(16),
  /** How often, while the stream is quiet, the leader looks for entries pending with another consumer (a deposed leader's late read). */
  strayCheckMs: z.number().int().positive().default(10_000),
  /**
   * A consumer (another replica's name: pods get new names on every rollout) with nothing
   * pending and silent this long is removed from the group, so the group does not grow with
   * every restart. A replica that comes back is re-created by its next read.
   */
  consumerRetentionMs: z.number().int().positive().default(3_600_000),
  /** An event a daemon started applying this many times and never finished (it died each time) is dead-lettered as poison. */
  maxInterruptedAttempts: z.number().int().positive().default(5),
  /**
   * Attempts at an event whose failures are neither transient (API server or Redis away)
   * nor a refusal; then it is dead-lettered (rule event.retries-exhausted) with the error.
   */
  maxAttempts: z.coerce.number().int().positive().default(10),
  /** The dead-letter stream is trimmed to about this many entries (XADD MAXLEN ~). */
  deadLetterMaxLength: z.coerce.number().int().positive().default(100_000),
  /** The outcome stream is trimmed to about this many records (XADD MAXLEN ~): a day of events and more at a fleet's usual rates. */
  outcomeMaxLength: z.coerce.number().int().positive().default(100_000),
  /** Liveness fails when the consume loop or the events in flight made no progress this long. */
  stallMs: z.number().int().positive().default(120_000),
  /**
   * Replicas that must have each commit before the daemon counts its event done (WAIT):
   * `auto` is one where the primary has any, none where it has none (redis/replica-wait.ts).
   */
  commitReplicas: z.union([z.literal('auto'), z.coerce.number().int().min(0).max(16)]).default('auto'),
  /** How long one WAIT for them waits; an event whose commit no replica has by then is held and waited for again. */
  commitReplicaTimeoutMs: z.number().int().positive().default(1_000),
  /** Every Redis command (not the blocking read, which has its own watchdog) gets this long. */
  redisCommandTimeoutMs: z.number().int().positive().default(5_000),
  /** How often stream lag, pending and dead-letter counts are read for /metrics (never per scrape). */
  metricsRefreshMs: z.number().int().positive().default(15_000),
  resyncIntervalMs: z.coerce.number().int().positive().default(300_000),
  /** A failed resync is tried again after this, doubling (with jitter) up to the resync interval. */
  resyncRetryBaseMs: z.number().int().positive().default(1_000),
  /** On SIGTERM: stop writing, release the Lease and exit within this, whether or not Redis and the API server answer (the pod's grace period is 30 s). */
  shutdownTimeoutMs: z.number().int().positive().default(20_000),
  orphanGraceMs: z.coerce.number().int().min(0).default(600_000),
  /** sync: remove orphans after the grace period; upsert-only: never delete on resync. */
  orphanPolicy: z.enum(['sync', 'upsert-only']).default('sync'),
  /** Log what resync would change without changing it. */
  resyncDryRun: z.boolean().default(false),
  leaseName: z.string().min(1).default('edge-registrar-sync'),
  /** client-go's defaults: a candidate waits 15 s after the Lease last changed; the holder steps down 10 s after its last renewal; tries every 2 s. */
  leaseDurationMs: z.number().int().positive().default(15_000),
  leaseRenewDeadlineMs: z.number().int().positive().default(10_000),
  leaseRenewMs: z.number().int().positive().default(2_000),
  retryBaseMs: z.number().int().positive().default(200),
  retryMaxMs: z.number().int().positive().default(30_000),
  tombstoneTtlSeconds: z.number().int().positive().default(30 * 24 * 3600),
  /**
   * Kubernetes Events on the managed entries and the Lease (sync/entry-events.ts), bounded as
   * client-go bounds them (kube/event-correlator.ts): per object 25 at once and one more every
   * 5 minutes; for the whole daemon `burst` at once and `perMinute` more a minute.
   */
  kubeEvents: z
    .object({
      enabled: z.boolean().default(true),
      burst: z.coerce.number().int().min(1).max(10_000).default(100),
      perMinute: z.coerce.number().min(0).max(6_000).default(60),
      objectBurst: z.number().int().positive().default(25),
      objectRefillSeconds: z.number().positive().default(300),
      /** How often series counts are written (and finished series forgotten). */
      tickMs: z.number().int().positive().default(60_000),
    })
    .default({ enabled: true, burst: 100, perMinute: 60, objectBurst: 25, objectRefillSeconds: 300, tickMs: 60_000 }),
})
  .refine((c) => c.leaseRenewDeadlineMs < c.leaseDurationMs, { message: 'the renew deadline must be shorter than the lease duration', path: ['leaseRenewDeadlineMs'] })
  .refine((c) => c.leaseRenewMs < c.leaseRenewDeadlineMs, { message: 'the retry period must be shorter than the renew deadline', path: ['leaseRenewMs'] })
  .refine((c) => c.redis.clusterNodes === undefined || c.outcomeStream === undefined || hashSlot(c.outcomeStream) === hashSlot(c.stream), {
    message: "on Redis Cluster the outcome stream must be in the stream's hash slot (the script that acknowledges an event writes its outcome): leave it unset, or give it the stream's name as its hash tag, {<stream>}:…",
    path: ['outcomeStream'],
  })
  .refine((c) => c.blockMs * 2 <= c.leaseDurationMs - c.leaseRenewDeadlineMs, { message: 'a blocking read must fit twice in the time between a leader stepping down and another taking over (lease duration − renew deadline)', path: ['blockMs'] });

export type SyncConfig = z.output<typeof syncSchema>;

export interface SyncFlags extends CommonFlags, RedisFlags, TelemetryGatewayFlags {
  consumer?: string | undefined;
  port?: string | undefined;
  orphanPolicy?: string | undefined;
  resyncInterval?: string | undefined;
  orphanGrace?: string | undefined;
  resyncDryRun?: boolean | undefined;
  leaseName?: string | undefined;
  istioApiVersion?: string | undefined;
  concurrency?: string | undefined;
  maxAttempts?: string | undefined;
  dlqMaxLength?: string | undefined;
  outcomeMaxLength?: string | undefined;
  commitReplicas?: string | undefined;
  /** commander's --no-kube-events sets it false. */
  kubeEvents?: boolean | undefined;
  kubeEventsBurst?: string | undefined;
  kubeEventsPerMinute?: string | undefined;
  telemetryTargetRefs?: string | undefined;
  telemetryMetrics?: string | undefined;
  telemetrySourceIdentity?: boolean | undefined;
  telemetryMaxExpressionCodepoints?: string | undefined;
  telemetryMaxObjectBytes?: string | undefined;
}

export function syncConfig(flags: SyncFlags, env: Env, defaultConsumer: string): SyncConfig {
  return parseWith(syncSchema, {
    ...commonInput(flags, env),
    redis: redisInput(flags, env),
    ...streamInput(flags, env),
    consumer: flags.consumer ?? env[ENV.consumer] ?? defaultConsumer,
    port: flags.port ?? env[ENV.syncPort],
    orphanPolicy: flags.orphanPolicy ?? env[ENV.orphanPolicy],
    resyncIntervalMs: secondsToMs(flags.resyncInterval ?? env[ENV.resyncInterval]),
    orphanGraceMs: secondsToMs(flags.orphanGrace ?? env[ENV.orphanGrace]),
    resyncDryRun: flags.resyncDryRun,
    leaseName: flags.leaseName ?? env[ENV.leaseName],
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    concurrency: flags.concurrency ?? env[ENV.syncConcurrency],
    maxAttempts: flags.maxAttempts ?? env[ENV.maxAttempts],
    deadLetterMaxLength: flags.dlqMaxLength ?? env[ENV.deadLetterMaxLength],
    outcomeMaxLength: flags.outcomeMaxLength ?? env[ENV.outcomeMaxLength],
    commitReplicas: flags.commitReplicas ?? env[ENV.commitReplicas],
    kubeEvents: definedOnly({
      enabled: flags.kubeEvents === false ? false : parseBoolean(env[ENV.kubeEvents]),
      burst: flags.kubeEventsBurst ?? env[ENV.kubeEventsBurst],
      perMinute: flags.kubeEventsPerMinute ?? env[ENV.kubeEventsPerMinute],
    }),
    telemetry: definedOnly({
      ...telemetryGatewayInput(flags, env),
      targetRefs: flags.telemetryTargetRefs ?? env[ENV.telemetryTargetRefs],
      metrics: flags.telemetryMetrics ?? env[ENV.telemetryMetrics],
      sourceIdentity: flags.telemetrySourceIdentity ?? parseBoolean(env[ENV.telemetrySourceIdentity]),
      maxExpressionCodepoints: flags.telemetryMaxExpressionCodepoints ?? env[ENV.telemetryMaxExpressionCodepoints],
      maxObjectBytes: flags.telemetryMaxObjectBytes ?? env[ENV.telemetryMaxObjectBytes],
    }),
  });
}
