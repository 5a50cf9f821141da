/**
 * `edge-registrar sync`: wires Redis, the cluster, the Lease, the consumer and the resync
 * loop together, serves /healthz (fails when the consumer stalls), /readyz and /metrics
 * (from memory) on its own port, and stops in order.
 */
import express from 'express';
import type { Logger } from 'pino';
import type { SyncConfig } from '../config/sync.ts';
import { probeRoutes, type ProbeCheck } from '../http/probes.ts';
import { closeGracefully, listenHttp } from '../http/serving.ts';
import { loadKubeConfig } from '../kube/client.ts';
import type { ObjectReference } from '../kube/event-correlator.ts';
import { EventRecorder } from '../kube/event-recorder.ts';
import { LeaderElector } from '../kube/lease.ts';
import { watchedPolicy } from '../policy-source.ts';
import { BlockingReader } from '../redis/blocking-reader.ts';
import { daemonKeys } from '../redis/keys.ts';
import { ReplicaWait } from '../redis/replica-wait.ts';
import { slotOwner } from '../redis/cluster-slot.ts';
import { clusterNodeOptions, connectWithin, createRedis, isCluster, redisOptions } from '../redis/connection.ts';
import { consumerGroupInfo, undeliveredEntries } from '../redis/consumer-group.ts';
import { TelemetryKeeper } from '../mesh-telemetry/telemetry-keeper.ts';
import { DEFAULT_TELEMETRY_OPTIONS } from '../mesh-telemetry/telemetry-object.ts';
import { createRegistry, createSyncMetrics, createTelemetryMetrics, eventTypeLabel } from '../observability/metrics.ts';
import { backoffDelay } from '../util/backoff.ts';
import { KeyedQueue } from '../util/keyed-queue.ts';
import { AttemptLog } from './attempt-log.ts';
import { migrateLegacyKeys } from './migrate-keys.ts';
import { StreamConsumer } from './consumer.ts';
import { REPORTING_CONTROLLER, entryEvents, leaseReference } from './entry-events.ts';
import { EntryWriter } from './entry-writer.ts';
import { CommitMemory } from './commit-memory.ts';
import { FleetMetrics } from './fleet-metrics.ts';
import { EventProcessor } from './processor.ts';
import { TermEndedError } from './term.ts';
import { Resyncer } from './resync.ts';
import { StateStore } from './state-store.ts';

export interface RunningSync {
  port: number;
  stop(): Promise<void>;
}

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
  commands.on('error', (err: unknown) => { logger.warn({ err, connection: 'commands' }, 'redis connection error'); });
  // A daemon that cannot reach Redis at start exits with the reason, rather than hang unready.
  await connectWithin(commands, config.redisStartDeadlineMs, 'Redis (the commands connection)');
  // Blocking reads on connections of their own that never re-send a read (see blocking-reader.ts).
  // On Redis Cluster the reads go straight to the node serving the stream's slot.
  const cluster = isCluster(config.redis);
  const reader = new BlockingReader({
    redisOptions: cluster ? clusterNodeOptions(config.redis, 'blocking') : redisOptions(config.redis, 'blocking'),
    ...(cluster ? { locate: (knowledge: 'current' | 'stale') => slotOwner(commands, config.stream, knowledge) } : {}),
    stream: config.stream,
    group: config.group,
    consumer: config.consumer,
    batchSize: config.batchSize,
    blockMs: config.blockMs,
    watchdogGraceMs: config.watchdogGraceMs,
    logger,
  });

  const kubeConfig = loadKubeConfig(config.kubeconfig);
  // Every entry written carries this replica's term; the webhook refuses it once the Lease moved on.
  const writer = new EntryWriter(kubeConfig, config.namespace, config.istioApiVersion, () => elector.fencingToken());
  const keys = daemonKeys(config.stream, config.namespace, config.outcomeStream);
  const store = new StateStore(commands, { keys, group: config.group, tombstoneTtlSeconds: config.tombstoneTtlSeconds, outcomeMaxLength: config.outcomeMaxLength });
  // Kubernetes Events about the entries and the election, bounded (kube/event-correlator.ts).
  const leaseRef = (uid?: string): ObjectReference => leaseReference(config.namespace, config.leaseName, uid);
  const events = config.kubeEvents.enabled
    ? new EventRecorder({
        kubeConfig,
        reportingController: REPORTING_CONTROLLER,
        reportingInstance: config.consumer,
        correlator: { objectBurst: config.kubeEvents.objectBurst, objectRefillSeconds: config.kubeEvents.objectRefillSeconds, globalBurst: config.kubeEvents.burst, globalPerMinute: config.kubeEvents.perMinute, dropsRegarding: leaseRef() },
        tickMs: config.kubeEvents.tickMs,
        logger: logger.child({ component: 'kube-events' }),
        written: metrics.kubeEvents,
      })
    : undefined;
  events?.start();
  const processor = new EventProcessor({
    redis: commands,
    store,
    writer,
    policy: () => policy.current(),
    namespace: config.namespace,
    istioApiVersion: config.istioApiVersion,
    deadLetterMaxLength: config.deadLetterMaxLength,
    logger,
    onApplied: (operation, seconds) => { metrics.applyDuration.observe({ operation }, seconds); },
    onDeadLetter: (rule) => { metrics.deadLetters.inc({ rule }); },
    onCommitted: (record) => { fleet.update(record); },
    commits: new CommitMemory(),
    ...(events ? { events } : {}),
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
      if (leader) {
        const lease = elector.won();
        events?.record(entryEvents.leaderElected(leaseRef(lease.uid), config.consumer, lease.transitions));
      }
      // The read in flight ends with the term, now (a deposed leader takes no deliveries).
      if (!leader) consumer.leadershipLost();
    },
  });
  // Events and drift repairs about one VPS never interleave: both queue on the same keys.
  const queue = new KeyedQueue();
  const attempts = new AttemptLog(commands, store.attemptsKey, logger.child({ component: 'attempts' }));
  // An event counts as done once a replica has its commit (--commit-replicas): see redis/replica-wait.ts.
  const replicas = new ReplicaWait(commands, {
    replicas: config.commitReplicas,
    timeoutMs: config.commitReplicaTimeoutMs,
    ...(cluster ? { clusterKey: config.stream } : {}),
    onWait: (result, seconds) => { metrics.replicaWaits.observe({ result }, seconds); },
  });
  const consumer = new StreamConsumer({
    reader,
    commands,
    processor,
    attempts,
    settlement: store.settlement,
    queue,
    stream: config.stream,
    group: config.group,
    consumer: config.consumer,
    batchSize: config.batchSize,
    concurrency: config.concurrency,
    strayCheckMs: config.strayCheckMs,
    consumerRetentionMs: config.consumerRetentionMs,
    maxInterruptedAttempts: config.maxInterruptedAttempts,
    maxAttempts: config.maxAttempts,
    retryBaseMs: config.retryBaseMs,
    retryMaxMs: config.retryMaxMs,
    logger,
    leadershipTerm: () => elector.term(),
    holdings: (vpsIds) => store.holdings(vpsIds),
    onResult: (result, seconds) => {
      metrics.events.inc({ event: eventTypeLabel(result.event), outcome: result.outcome });
      metrics.eventDuration.observe(seconds);
    },
    onRetry: (reason) => { metrics.retries.inc({ reason }); },
    onRewind: (reason) => { metrics.rewinds.inc({ reason }); },
    durable: () => replicas.replicated(),
    // Keys under their old names (an install from before they moved into the stream's slot) move first.
    onTermStart: async () => {
      await migrateLegacyKeys(commands, { stream: config.stream, namespace: config.namespace, keys, cluster, logger, repairIndexes: () => store.repairIndexes({ scanRecords: true }) });
    },
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
      metrics.deadLetterLength.set(await commands.xlen(keys.deadLetters));
      metrics.outcomeLength.set(await commands.xlen(keys.outcomes));
      if (!elector.isLeader() && Date.now() - lastFleetRead >= config.resyncIntervalMs) {
        fleet.replaceAll(await store.registered((error) => { logger.error({ vpsId: error.vpsId, err: error }, 'state record unreadable; VPS left out of the fleet metrics'); }));
        lastFleetRead = Date.now();
      }
    } catch (err) {
      logger.debug({ err }, 'stream gauges not refreshed');
    }
  };
  // Set first thing on stop: no loop arms its timer again after it, so the process can end.
  let stopping = false;
  let gaugeTimer: NodeJS.Timeout | undefined;
  const gaugeLoop = async (): Promise<void> => {
    await refreshGauges();
    if (!stopping) gaugeTimer = setTimeout(() => void gaugeLoop(), config.metricsRefreshMs);
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
    attempts,
    ...(events ? { events } : {}),
  });
  let resyncTimer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  /** When the next resync is due: an interval after the last that succeeded, or a back-off after one that failed. */
  let nextResyncAt = 0;
  let resyncFailures = 0;
  const resyncOnce = async (): Promise<void> => {
    const term = elector.term();
    if (term === undefined || stopping || Date.now() < nextResyncAt) return;
    // Every repair is fenced by the term it was planned in, as events are.
    const fence = (): void => {
      if (stopping || elector.term() !== term) throw new TermEndedError(`leadership term ${term} ended; resync stopped`);
    };
    try {
      const report = await resyncer.run(fence);
      resyncFailures = 0;
      nextResyncAt = Date.now() + config.resyncIntervalMs;
      const counts = { restored: report.restored, orphan_deleted: report.orphansDeleted, tombstoned: report.tombstoned, refused: report.refused, corrupt_record: report.corrupt };
      for (const [action, names] of Object.entries(counts)) if (names.length > 0) metrics.resyncChanges.inc({ action }, names.length);
      if (report.indexesRepaired > 0) metrics.resyncChanges.inc({ action: 'index_repaired' }, report.indexesRepaired);
      if (report.attemptsSwept > 0) metrics.resyncChanges.inc({ action: 'attempts_swept' }, report.attemptsSwept);
      metrics.resyncRuns.inc({ outcome: 'completed' });
      fleet.replaceAll(report.registered);
      fleetLoadedAsLeader = elector.term() === term;
    } catch (err) {
      if (err instanceof TermEndedError) {
        metrics.resyncRuns.inc({ outcome: 'term-ended' });
        logger.info({ term }, 'resync stopped: its leadership term ended');
        return;
      }
      // Backed off: each try reads the whole fleet from Redis and the API server, which may be the ones struggling.
      resyncFailures++;
      const delay = backoffDelay(resyncFailures, { baseMs: config.resyncRetryBaseMs, maxMs: config.resyncIntervalMs });
      nextResyncAt = Date.now() + delay;
      metrics.resyncRuns.inc({ outcome: 'failed' });
      logger.warn({ err, failures: resyncFailures, retryInMs: delay }, 'resync failed; will try again');
    }
  };
  const resyncLoop = (): void => {
    running = resyncOnce().finally(() => {
      running = undefined;
      if (!stopping) resyncTimer = setTimeout(resyncLoop, 1_000);
    });
  };

  if (config.telemetry.enabled) {
    const { namespace, name, selector, targetRefs, metrics: istioMetrics, coalesceMs, sourceIdentity, maxExpressionCodepoints, maxObjectBytes } = config.telemetry;
    telemetry = new TelemetryKeeper({
      kubeConfig,
      options: { ...DEFAULT_TELEMETRY_OPTIONS, namespace, name, selector, targetRefs, metrics: istioMetrics, maxExpressionCodepoints, maxObjectBytes },
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
  resyncLoop();
  void gaugeLoop();

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

  /**
   * The order Kubernetes needs: stop writing (events and repairs left pending, each fenced by
   * `stopping`), wait for writes already sent, then release the Lease so a standby takes over
   * at once, then close. Each wait is bounded, so the whole ends within shutdownTimeoutMs even
   * when Redis or the API server does not answer; whatever has not finished by then is left
   * for the next leader (nothing is acknowledged that was not applied).
   */
  const shutdown = async (): Promise<void> => {
    const deadline = Date.now() + config.shutdownTimeoutMs;
    const within = async (what: string, share: number, work: Promise<unknown>): Promise<void> => {
      const budget = Math.max(0, Math.min(deadline - Date.now(), config.shutdownTimeoutMs * share));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => { resolve('late'); }, budget)));
      const outcome = await Promise.race([work.then(() => 'done' as const, () => 'done' as const), late]);
      clearTimeout(timer);
      if (outcome === 'late') logger.warn({ step: what, waitedMs: budget }, 'shutdown step did not finish in time; going on');
    };
    stopping = true;
    if (resyncTimer) clearTimeout(resyncTimer);
    if (gaugeTimer) clearTimeout(gaugeTimer);
    await within('stop consuming and repairing', 0.5, Promise.all([consumer.stop(), running ?? Promise.resolve()]));
    await within('stop the Telemetry keeper', 0.1, telemetry?.stop() ?? Promise.resolve());
    await within('release the Lease', 0.2, elector.stop());
    await within('write the last Event counts', 0.05, events?.stop(config.shutdownTimeoutMs * 0.05) ?? Promise.resolve());
    policy.stop();
    attempts.stop();
    await within('close the probe server', 0.1, closeGracefully(http.server, 1_000));
    reader.close();
    // Not QUIT: it waits for Redis's answer, which a frozen Redis never gives.
    commands.disconnect();
    logger.info('sync stopped');
  };
  let stopped: Promise<void> | undefined;
  return {
    port: http.port,
    stop: () => (stopped ??= shutdown()),
  };
}

