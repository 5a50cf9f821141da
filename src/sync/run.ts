/**
 * `edge-registrar sync`: wires Redis, the cluster, the Lease, the consumer and the resync
 * loop together, serves /healthz (fails when the consumer stalls), /readyz and /metrics
 * (from memory) on its own port, and stops in order.
 */
import express from 'express';
import type { Logger } from 'pino';
import type { SyncConfig } from '../config.ts';
import { probeRoutes, type ProbeCheck } from '../http/probes.ts';
import { closeGracefully, listenHttp } from '../http/serving.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { LeaderElector } from '../kube/lease.ts';
import { watchedPolicy } from '../policy-source.ts';
import { createRedis } from '../redis/connection.ts';
import { consumerGroupInfo, undeliveredEntries } from '../redis/consumer-group.ts';
import { TelemetryKeeper } from '../mesh-telemetry/telemetry-keeper.ts';
import { DEFAULT_TELEMETRY_OPTIONS } from '../mesh-telemetry/telemetry-object.ts';
import { createRegistry, createSyncMetrics, createTelemetryMetrics } from '../telemetry/metrics.ts';
import { KeyedQueue } from '../util/keyed-queue.ts';
import { StreamConsumer } from './consumer.ts';
import { dlqStream } from './dead-letter.ts';
import { EntryWriter } from './entry-writer.ts';
import { FleetMetrics } from './fleet-metrics.ts';
import { EventProcessor } from './processor.ts';
import { Resyncer } from './resync.ts';
import { StateStore, stateKeyPrefix } from './state-store.ts';

export interface RunningSync {
  port: number;
  stop(): Promise<void>;
}

export { stateKeyPrefix } from './state-store.ts';

export async function runSync(config: SyncConfig, logger: Logger): Promise<RunningSync> {
  const registry = createRegistry(true);
  const metrics = createSyncMetrics(registry);
  // Built below once the Lease and the fleet exist; the fleet tells it of every change.
  let telemetry: TelemetryKeeper | undefined;
  // The fleet in memory is the desired state only once a resync has read it under this
  // leadership (a standby's copy may be minutes old): the Telemetry waits for that.
  let fleetLoadedAsLeader = false;
  const fleet = new FleetMetrics(metrics, () => telemetry?.fleetChanged());
  const policy = await watchedPolicy(config.policyPath, { intervalMs: 10_000, logger });
  const commands = createRedis(config.redis, 'commands', { commandTimeoutMs: config.redisCommandTimeoutMs });
  const blocking = createRedis(config.redis, 'blocking');
  for (const [name, client] of [['commands', commands], ['blocking', blocking]] as const) {
    client.on('error', (err: unknown) => { logger.warn({ err, connection: name }, 'redis connection error'); });
  }
  await Promise.all([commands.connect(), blocking.connect()]);

  const kubeConfig = loadKubeConfig(config.kubeconfig);
  const writer = new EntryWriter(kubeConfig, config.namespace, config.istioApiVersion);
  const store = new StateStore(commands, { prefix: stateKeyPrefix(config.namespace), stream: config.stream, group: config.group, tombstoneTtlSeconds: config.tombstoneTtlSeconds });
  const processor = new EventProcessor({
    redis: commands,
    store,
    writer,
    policy: () => policy.current(),
    namespace: config.namespace,
    istioApiVersion: config.istioApiVersion,
    stream: config.stream,
    group: config.group,
    deadLetterMaxLength: config.deadLetterMaxLength,
    logger,
    onApplied: (operation, seconds) => { metrics.applyDuration.observe({ operation }, seconds); },
    onDeadLetter: (rule) => { metrics.deadLetters.inc({ rule }); },
    onCommitted: (record) => { fleet.update(record); },
  });

  const elector = new LeaderElector({
    kubeConfig,
    namespace: config.namespace,
    name: config.leaseName,
    identity: config.consumer,
    durationMs: config.leaseDurationMs,
    renewDeadlineMs: config.leaseRenewDeadlineMs,
    retryPeriodMs: config.leaseRenewMs,
    logger,
    onChange: (leader) => {
      metrics.leader.set(leader ? 1 : 0);
      fleetLoadedAsLeader = false;
    },
  });
  // Events and drift repairs about one VPS never interleave: both queue on the same keys.
  const queue = new KeyedQueue();
  const consumer = new StreamConsumer({
    blocking,
    commands,
    processor,
    queue,
    stream: config.stream,
    group: config.group,
    consumer: config.consumer,
    batchSize: config.batchSize,
    blockMs: config.blockMs,
    concurrency: config.concurrency,
    claimIdleMs: config.claimIdleMs,
    consumerRetentionMs: config.consumerRetentionMs,
    maxDeliveries: config.maxDeliveries,
    maxAttempts: config.maxAttempts,
    retryBaseMs: config.retryBaseMs,
    retryMaxMs: config.retryMaxMs,
    logger,
    leadershipTerm: () => elector.term(),
    holdings: (vpsIds) => store.holdings(vpsIds),
    onResult: (result, seconds) => {
      metrics.events.inc({ event: result.event ?? 'unknown', outcome: result.outcome });
      metrics.eventDuration.observe(seconds);
    },
    onRetry: (reason) => { metrics.retries.inc({ reason }); },
  });
  await consumer.ensureGroup();

  // Lag, pending and the dead-letter length are read on a timer, never per scrape; the
  // registered fleet is read whole here too (a standby has no commits to follow).
  let lastFleetRead = 0;
  const refreshGauges = async (): Promise<void> => {
    try {
      const info = await consumerGroupInfo(commands, config.stream, config.group);
      if (info !== undefined) {
        metrics.pending.set(Number(info.get('pending') ?? 0));
        metrics.streamLag.set(await undeliveredEntries(commands, config.stream, info));
      }
      metrics.deadLetterLength.set(await commands.xlen(dlqStream(config.stream)));
      if (!elector.isLeader() && Date.now() - lastFleetRead >= config.resyncIntervalMs) {
        fleet.replaceAll(await store.registered((error) => { logger.error({ vpsId: error.vpsId, err: error }, 'state record unreadable; VPS left out of the fleet metrics'); }));
        lastFleetRead = Date.now();
      }
    } catch (err) {
      logger.debug({ err }, 'stream gauges not refreshed');
    }
  };
  let gaugeTimer: NodeJS.Timeout | undefined;
  const gaugeLoop = async (): Promise<void> => {
    await refreshGauges();
    gaugeTimer = setTimeout(() => void gaugeLoop(), config.metricsRefreshMs);
  };

  const resyncer = new Resyncer({
    store,
    writer,
    queue,
    policy: () => policy.current(),
    namespace: config.namespace,
    istioApiVersion: config.istioApiVersion,
    orphanPolicy: config.orphanPolicy,
    orphanGraceMs: config.orphanGraceMs,
    dryRun: config.resyncDryRun,
    logger: logger.child({ component: 'resync' }),
  });
  let resyncTimer: NodeJS.Timeout | undefined;
  let lastResync = 0;
  const resyncLoop = async (): Promise<void> => {
    if (elector.isLeader() && Date.now() - lastResync >= config.resyncIntervalMs) {
      try {
        const report = await resyncer.run();
        lastResync = Date.now();
        const counts = { restored: report.restored, orphan_deleted: report.orphansDeleted, tombstoned: report.tombstoned, refused: report.refused, corrupt_record: report.corrupt };
        for (const [action, names] of Object.entries(counts)) if (names.length > 0) metrics.resyncChanges.inc({ action }, names.length);
        metrics.resyncRuns.inc();
        fleet.replaceAll(report.registered);
        fleetLoadedAsLeader = elector.isLeader();
      } catch (err) {
        logger.warn({ err }, 'resync failed; will try again');
      }
    }
    resyncTimer = setTimeout(() => void resyncLoop(), 1_000);
  };

  if (config.telemetry.enabled) {
    const { namespace, name, selector, targetRefs, metrics: istioMetrics, coalesceMs, sourceIdentity } = config.telemetry;
    telemetry = new TelemetryKeeper({
      kubeConfig,
      options: { ...DEFAULT_TELEMETRY_OPTIONS, namespace, name, selector, targetRefs, metrics: istioMetrics },
      // The entries' namespace and the policy's app and version: what a VPS's entry says it is.
      ...(sourceIdentity ? { sourceIdentity: () => ({ namespace: config.namespace, app: policy.current().app, version: policy.current().version }) } : {}),
      fleet: () => fleet.snapshot(),
      isLeader: () => elector.isLeader() && fleetLoadedAsLeader,
      coalesceMs,
      repairIntervalMs: config.resyncIntervalMs,
      metrics: createTelemetryMetrics(registry),
      logger: logger.child({ component: 'telemetry' }),
    });
  }

  elector.start();
  consumer.start();
  telemetry?.start();
  void resyncLoop();
  void gaugeLoop();

  let stopping = false;
  const readiness = (): ProbeCheck => {
    const reasons: string[] = [];
    if (stopping) reasons.push('shutting down');
    if (commands.status !== 'ready') reasons.push(`redis ${commands.status}`);
    return { ok: reasons.length === 0, reasons };
  };
  const liveness = (): ProbeCheck => {
    const stalled = consumer.stalledMs();
    return stalled > config.stallMs
      ? { ok: false, reasons: [`the consumer has made no progress for ${Math.round(stalled / 1000)} s (${consumer.inFlight} events in flight); a restart is due`] }
      : { ok: true, reasons: [] };
  };
  const app = express();
  app.disable('x-powered-by');
  probeRoutes(app, { registry, readiness, liveness });
  const http = await listenHttp(app, { host: config.host, port: config.port, keepAliveTimeoutMs: 65_000 });
  logger.info({ port: http.port, stream: config.stream, group: config.group, consumer: config.consumer, namespace: config.namespace }, 'sync started');

  let stopped: Promise<void> | undefined;
  return {
    port: http.port,
    stop: () =>
      (stopped ??= (async () => {
        stopping = true;
        if (resyncTimer) clearTimeout(resyncTimer);
        if (gaugeTimer) clearTimeout(gaugeTimer);
        await consumer.stop();
        await telemetry?.stop();
        await elector.stop();
        policy.stop();
        await closeGracefully(http.server, 2_000);
        blocking.disconnect();
        await commands.quit().catch(() => undefined);
        logger.info('sync stopped');
      })()),
  };
}
