/**
 * `edge-registrar sync`: wires Redis, the cluster, the Lease, the consumer and the resync
 * loop together, serves /healthz, /readyz and /metrics on its own port, and stops in order.
 */
import express from 'express';
import type { Logger } from 'pino';
import type { SyncConfig } from '../config.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { LeaderElector } from '../kube/lease.ts';
import { watchedPolicy } from '../policy-source.ts';
import { createRedis } from '../redis/connection.ts';
import { createRegistry, createSyncMetrics } from '../telemetry/metrics.ts';
import { listenHttp, closeGracefully } from '../webhook/server.ts';
import { probeRoutes } from '../webhook/app.ts';
import { StreamConsumer } from './consumer.ts';
import { EntryWriter } from './entry-writer.ts';
import { EventProcessor } from './processor.ts';
import { Resyncer } from './resync.ts';
import { KeyedQueue } from '../util/keyed-queue.ts';
import { StateStore, type VpsRecord } from './state-store.ts';

export interface RunningSync {
  port: number;
  stop(): Promise<void>;
}

export function stateKeyPrefix(namespace: string): string {
  return `edge-registrar:${namespace}:`;
}

export async function runSync(config: SyncConfig, logger: Logger): Promise<RunningSync> {
  const registry = createRegistry(true);
  const metrics = createSyncMetrics(registry);
  const policy = await watchedPolicy(config.policyPath, { intervalMs: 10_000, logger });
  const commands = createRedis(config.redis, 'commands');
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
    logger,
    onApplied: (operation, seconds) => { metrics.applyDuration.observe({ operation }, seconds); },
    onDeadLetter: (rule) => { metrics.deadLetters.inc({ rule }); },
  });

  const elector = new LeaderElector({
    kubeConfig,
    namespace: config.namespace,
    name: config.leaseName,
    identity: config.consumer,
    durationMs: config.leaseDurationMs,
    renewMs: config.leaseRenewMs,
    logger,
    onChange: (leader) => { metrics.leader.set(leader ? 1 : 0); },
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
    retryBaseMs: config.retryBaseMs,
    retryMaxMs: config.retryMaxMs,
    logger,
    isLeader: () => elector.isLeader(),
    onResult: (result, seconds) => {
      metrics.events.inc({ event: result.event ?? 'unknown', outcome: result.outcome });
      metrics.eventDuration.observe(seconds);
    },
    onRetry: (reason) => { metrics.retries.inc({ reason }); },
  });
  await consumer.ensureGroup();

  const publishRegistered = (records: VpsRecord[]): void => {
    metrics.vpsInfo.reset();
    metrics.managedEntries.reset();
    const byCountry = new Map<string, number>();
    for (const r of records) {
      metrics.vpsInfo.set({ name: r.name, address: r.address, country: r.country, vps_id: r.vpsId }, 1);
      byCountry.set(r.country, (byCountry.get(r.country) ?? 0) + 1);
    }
    for (const [country, n] of byCountry) metrics.managedEntries.set({ country }, n);
  };
  // Lag, pending and the registered VPSs are read when Prometheus scrapes, so never stale.
  const refreshStreamGauges = async (): Promise<void> => {
    try {
      const groups = (await commands.xinfo('GROUPS', config.stream)) as unknown[][];
      for (const g of groups) {
        const info = new Map<string, unknown>();
        for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
        if (info.get('name') !== config.group) continue;
        metrics.pending.set(Number(info.get('pending') ?? 0));
        const lag = info.get('lag');
        if (lag !== null && lag !== undefined) metrics.streamLag.set(Number(lag));
      }
      publishRegistered(await store.registered());
    } catch (err) {
      logger.debug({ err }, 'stream gauges not refreshed');
    }
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
        for (const _ of report.restored) metrics.resyncChanges.inc({ action: 'restored' });
        for (const _ of report.orphansDeleted) metrics.resyncChanges.inc({ action: 'orphan_deleted' });
        for (const _ of report.refused) metrics.resyncChanges.inc({ action: 'refused' });
        publishRegistered(report.registered);
      } catch (err) {
        logger.warn({ err }, 'resync failed; will try again');
      }
    }
    resyncTimer = setTimeout(() => void resyncLoop(), 1_000);
  };

  elector.start();
  consumer.start();
  void resyncLoop();

  let stopping = false;
  const app = express();
  app.disable('x-powered-by');
  app.use('/metrics', (_req, _res, next) => {
    void refreshStreamGauges().then(() => { next(); });
  });
  probeRoutes(app, {
    registry,
    readiness: () => {
      const reasons: string[] = [];
      if (stopping) reasons.push('shutting down');
      if (commands.status !== 'ready') reasons.push(`redis ${commands.status}`);
      return { ready: reasons.length === 0, reasons };
    },
  });
  const http = await listenHttp(app, { host: config.host, port: config.port, keepAliveTimeoutMs: 65_000 });
  logger.info({ port: http.port, stream: config.stream, group: config.group, consumer: config.consumer, namespace: config.namespace }, 'sync started');

  let stopped: Promise<void> | undefined;
  return {
    port: http.port,
    stop: () =>
      (stopped ??= (async () => {
        stopping = true;
        if (resyncTimer) clearTimeout(resyncTimer);
        await consumer.stop();
        await elector.stop();
        policy.stop();
        await closeGracefully(http.server, 2_000);
        blocking.disconnect();
        await commands.quit().catch(() => undefined);
        logger.info('sync stopped');
      })()),
  };
}
