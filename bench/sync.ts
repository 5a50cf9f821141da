/**
 * The sync daemon against a baseline, in one run on one machine: a real redis-server, the
 * real kube-apiserver with Istio's CRDs, and the webhook registered, so both sides pay for
 * the same guarded path.
 *
 *   backfill   N register events published at once (what `backfill` does) and applied by
 *              `edge-registrar sync --concurrency C`, against the same N entries written
 *              directly with client-node server-side apply, C at a time.
 *   trickle    R events a second for S seconds; latency from XADD (or from the baseline's
 *              apply call) to the entry appearing in a watch of the API server.
 *
 * The baseline writes exactly the objects the daemon writes (the same planner, the same
 * field manager, the sync identity); only Redis, ordering and bookkeeping are missing.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { loadKubeConfig, makeApiClient } from '../src/kube/client.ts';
import { DEFAULT_POLICY } from '../src/policy/policy-file.ts';
import { FIELD_MANAGER } from '../src/sync/entry-writer.ts';
import { registerEventSchema } from '../src/sync/event.ts';
import { planRegister, type ManagedEntry } from '../src/sync/planner.ts';
import { eventFields, publish, publishMany } from '../src/sync/publisher.ts';
import { ensureKubeBinaries } from '../test/harness/kube-build.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../test/harness/kube-cluster.ts';
import { spawnSync, spawnWebhook } from '../test/harness/processes.ts';
import { ensureRedisServer, startRedis } from '../test/harness/redis-server.ts';
import { EntryWatch } from './entry-watch.ts';
import { Semaphore } from '../src/util/semaphore.ts';
import { percentile, printTable } from './stats.ts';

const NAMESPACE = 'airport-prod';

interface KubeEventCount {
  written: number;
  applied: number;
  /** The EventsRateLimited series count: occurrences the rate limit dropped. */
  droppedCounted: number;
}
const STREAM = 'sigma:vps-events';

const { values: opts } = parseArgs({
  options: {
    vps: { type: 'string', default: '5000' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string', default: '20' },
    // 1,200 samples at the default rate: a p99 of 300 would be the third-slowest event alone.
    seconds: { type: 'string', default: '60' },
    /** Which parts to run: `backfill,trickle` (both), or one of them. */
    phases: { type: 'string', default: 'backfill,trickle' },
    /** Write a CPU profile of the daemon during its trickle into this directory (--cpu-prof). */
    'cpu-prof-dir': { type: 'string' },
  },
});
const PHASES = new Set(opts.phases.split(','));
const VPS = Number(opts.vps);
const CONCURRENCY = Number(opts.concurrency);
const RATE = Number(opts.rate);
const SECONDS = Number(opts.seconds);
const log = (line: string): void => {
  console.error(line);
};

interface Vps {
  vpsId: string;
  name: string;
  address: string;
  country: string;
}

/**
 * N VPSs with distinct public addresses (45.77.0.0/16 onwards); each phase numbers its names
 * from its own offset, so no phase sees another's entries.
 */
function fleet(n: number, offset: number): Vps[] {
  return Array.from({ length: n }, (_, i) => ({
    vpsId: `bench-${offset + i}`,
    name: `vps-us-${offset + i}`,
    address: `45.${77 + Math.floor(i / 60_000)}.${Math.floor(i / 240) % 250}.${(i % 240) + 1}`,
    country: 'us',
  }));
}

function registerFields(vps: Vps): string[] {
  const built = eventFields({ event: 'register', vps_id: vps.vpsId, name: vps.name, address: vps.address, country: vps.country });
  if (!built.ok) throw new Error(built.message);
  return built.fields;
}

/** The object the daemon would write for this VPS, for the baseline to write directly. */
function plannedEntry(vps: Vps, index: number): ManagedEntry {
  const event = registerEventSchema.parse({ event: 'register', vps_id: vps.vpsId, name: vps.name, address: vps.address, country: vps.country });
  const plan = planRegister(event, `${Date.now()}-${index}`, { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
  if (!plan.ok) throw new Error(`${plan.rule}: ${plan.reason}`);
  return plan.entry;
}

/**
 * The baseline's writer: client-node's CustomObjectsApi with the daemon's connection handling
 * (makeApiClient: kept-alive connections, a deadline), so the comparison is about what the
 * daemon adds. `asShipped` uses client-node's own makeApiClient instead, which opens a new TLS
 * connection for every request: what the daemon did before it pooled them.
 */
class DirectWriter {
  readonly #api: k8s.CustomObjectsApi;
  constructor(kubeconfig: string, asShipped = false) {
    const kc = loadKubeConfig(kubeconfig);
    // A long deadline: the reset between phases deletes thousands of entries in one call.
    this.#api = asShipped ? kc.makeApiClient(k8s.CustomObjectsApi) : makeApiClient(kc, k8s.CustomObjectsApi, 300_000);
  }

  async apply(entry: ManagedEntry): Promise<void> {
    await this.#api.patchNamespacedCustomObject(
      { group: 'networking.istio.io', version: 'v1', namespace: NAMESPACE, plural: 'workloadentries', name: entry.metadata.name, body: entry, fieldManager: FIELD_MANAGER, force: true },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply),
    );
  }

  async deleteAll(): Promise<void> {
    await this.#api.deleteCollectionNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: NAMESPACE, plural: 'workloadentries' });
  }
}

interface Throughput {
  seconds: number;
  perSecond: number;
}

interface Latency {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** The five slowest samples, with their place in the trickle: where a p99 comes from. */
  worst: { index: number; ms: number }[];
}

function latencyOf(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const worst = samples.map((ms, index) => ({ index, ms })).sort((a, b) => b.ms - a.ms).slice(0, 5);
  return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted.at(-1) ?? Number.NaN, worst };
}

/** Resolves once the daemon has finished its first resync (its counter, on /metrics). */
async function firstResync(port: number): Promise<void> {
  for (let waited = 0; waited < 60_000; waited += 100) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    if (Number(/^edge_registrar_sync_resyncs_total\{outcome="completed"\} (\d+)/m.exec(text)?.[1] ?? 0) >= 1) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the sync daemon did not finish its first resync within 60 s');
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'edge-registrar-bench-'));
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const redisServer = await startRedis({ binary: await ensureRedisServer(log) });
    cleanups.push(() => redisServer.stop());
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    cleanups.push(() => {
      redis.disconnect();
      return Promise.resolve();
    });
    const binaries = await ensureKubeBinaries(log);
    const cluster: StartedCluster = await startCluster({ binaries, dir: join(work, 'kube'), withControllerManager: false, log });
    cleanups.push(() => cluster.stop());
    await mkdir(join(work, 'logs'));
    const webhook = await spawnWebhook(cluster, join(work, 'certs'), join(work, 'logs'), ['--log-level', 'warn']);
    cleanups.push(async () => {
      await webhook.stop();
    });
    await webhook.ready();

    const watch = new EntryWatch(loadKubeConfig(cluster.state.adminKubeconfig), NAMESPACE);
    await watch.start();
    cleanups.push(() => {
      watch.stop();
      return Promise.resolve();
    });
    const direct = new DirectWriter(kubeconfigFor(cluster.state, 'sync'));

    const reset = async (): Promise<void> => {
      await redis.flushall();
      await direct.deleteAll();
      await watch.waitForCount(0, 300_000);
      // One DELETE of the collection, not one per Event as `kubectl delete --all` does.
      await cluster.kubectl('admin', ['delete', '--raw', `/apis/events.k8s.io/v1/namespaces/${NAMESPACE}/events`]);
    };
    /** The Kubernetes Events the daemon wrote (read once it has stopped and flushed its series). */
    const kubeEvents = async (): Promise<KubeEventCount> => {
      const res = await cluster.kubectl('admin', ['-n', NAMESPACE, 'get', 'events.events.k8s.io', '-o', 'json']);
      const items = (JSON.parse(res.stdout) as { items: { reportingController?: string; reason: string; series?: { count: number } }[] }).items.filter((e) => e.reportingController === 'edge-registrar.io/sync');
      const notice = items.find((e) => e.reason === 'EventsRateLimited');
      return { written: items.length, applied: items.filter((e) => e.reason === 'Applied').length, droppedCounted: notice === undefined ? 0 : (notice.series?.count ?? 1) };
    };
    const withDaemon = async <T>(run: () => Promise<T>, extraArgs: string[] = [], nodeOptions = ''): Promise<T> => {
      const env = nodeOptions === '' ? {} : { env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${nodeOptions}` } };
      const sync = await spawnSync(cluster, redisServer.url, join(work, 'logs'), ['--consumer', 'bench', '--concurrency', String(CONCURRENCY), '--log-level', 'warn', ...extraArgs], env);
      try {
        await sync.ready();
        // Past its start-up too: the baseline's writer is long warm, and the daemon's first
        // resync (run at once on leading) would otherwise delay the first events it measures.
        await firstResync(sync.port);
        return await run();
      } finally {
        await sync.stop();
      }
    };

    // Warm-up: JIT, connection pools, the webhook's caches, etcd's first compaction.
    log('[bench] warm-up: 300 entries directly');
    const limiter = new Semaphore(CONCURRENCY);
    const warm = fleet(300, 0);
    watch.expect(warm.map((v) => [v.name, v.address]));
    await Promise.all(warm.map((v, i) => limiter.run(() => direct.apply(plannedEntry(v, i)))));
    await watch.waitForAll(120_000);
    await reset();

    // ---- backfill ----
    const backfillBaseline = async (writer: DirectWriter, offset: number): Promise<Throughput> => {
      const vpss = fleet(VPS, offset);
      const entries = vpss.map((v, i) => plannedEntry(v, i));
      watch.expect(vpss.map((v) => [v.name, v.address]));
      const start = performance.now();
      await Promise.all(entries.map((e) => limiter.run(() => writer.apply(e))));
      const end = await watch.waitForAll(600_000);
      const seconds = (end - start) / 1000;
      return { seconds, perSecond: VPS / seconds };
    };
    const backfillDaemon = (offset: number, extraArgs: string[] = []): Promise<Throughput> =>
      withDaemon(async () => {
        const vpss = fleet(VPS, offset);
        const events = vpss.map(registerFields);
        watch.expect(vpss.map((v) => [v.name, v.address]));
        const start = performance.now();
        await publishMany(redis, STREAM, events);
        const end = await watch.waitForAll(600_000);
        const seconds = (end - start) / 1000;
        return { seconds, perSecond: VPS / seconds };
      }, extraArgs);
    let backfills: { base: Throughput; shipped: Throughput; sync: Throughput; telemetry: Throughput; quiet: Throughput; events: KubeEventCount } | undefined;
    if (PHASES.has('backfill')) {
      log(`[bench] backfill of ${VPS} VPSs at concurrency ${CONCURRENCY}: baseline`);
      const baseBackfill = await backfillBaseline(direct, 1_000_000);
      await reset();
      log(`[bench] backfill of ${VPS} VPSs at concurrency ${CONCURRENCY}: client-node as shipped (a TLS connection per request)`);
      const shippedBackfill = await backfillBaseline(new DirectWriter(kubeconfigFor(cluster.state, 'sync'), true), 5_000_000);
      await reset();
      log(`[bench] backfill of ${VPS} VPSs at concurrency ${CONCURRENCY}: edge-registrar sync`);
      const syncBackfill = await backfillDaemon(2_000_000);
      const events = await kubeEvents();
      await reset();
      log(`[bench] backfill of ${VPS} VPSs at concurrency ${CONCURRENCY}: edge-registrar sync --no-kube-events`);
      const quietBackfill = await backfillDaemon(7_000_000, ['--no-kube-events']);
      await reset();
      // The managed Telemetry on: its keeper renders and writes the whole fleet's mapping while
      // the backfill runs (coalesced, one pass per 2 s at most).
      log(`[bench] backfill of ${VPS} VPSs at concurrency ${CONCURRENCY}: edge-registrar sync --telemetry`);
      const telemetryBackfill = await backfillDaemon(6_000_000, ['--telemetry']);
      await reset();
      backfills = { base: baseBackfill, shipped: shippedBackfill, sync: syncBackfill, telemetry: telemetryBackfill, quiet: quietBackfill, events };
    }

    // ---- trickle ----
    const trickle = async (offset: number, send: (vps: Vps, index: number) => Promise<unknown>): Promise<Latency> => {
      const count = RATE * SECONDS;
      const vpss = fleet(count, offset);
      watch.expect(vpss.map((v) => [v.name, v.address]));
      const sentAt = new Map<string, number>();
      const start = performance.now();
      const sends: Promise<unknown>[] = [];
      for (const [i, vps] of vpss.entries()) {
        const due = start + (i * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        sentAt.set(vps.name, performance.now());
        sends.push(limiter.run(() => send(vps, i)));
      }
      await Promise.all(sends);
      await watch.waitForAll(120_000);
      return latencyOf(vpss.map((v) => (watch.seenAt(v.name) ?? Number.NaN) - (sentAt.get(v.name) ?? Number.NaN)));
    };
    let trickles: { base: Latency; sync: Latency } | undefined;
    if (PHASES.has('trickle')) {
      log(`[bench] trickle of ${RATE} events/s for ${SECONDS}s: baseline`);
      const baseTrickle = await trickle(3_000_000, (vps, i) => direct.apply(plannedEntry(vps, i)));
      await reset();
      log(`[bench] trickle of ${RATE} events/s for ${SECONDS}s: edge-registrar sync`);
      const profile = opts['cpu-prof-dir'] === undefined ? '' : `--cpu-prof --cpu-prof-dir=${opts['cpu-prof-dir']}`;
      const syncTrickle = await withDaemon(() => trickle(4_000_000, (vps) => publish(redis, STREAM, registerFields(vps))), [], profile);
      await reset();
      trickles = { base: baseTrickle, sync: syncTrickle };
    }

    const ms = (x: number): string => `${x.toFixed(1)} ms`;
    const rate = (t: Throughput): string => `${t.perSecond.toFixed(0)} /s (${t.seconds.toFixed(1)} s)`;
    const rows: string[][] = [];
    if (backfills !== undefined) {
      const { base, sync, telemetry } = backfills;
      rows.push(
        [`${VPS}-VPS backfill, entries applied per second`, rate(sync), rate(base), (sync.perSecond / base.perSecond).toFixed(2)],
        ['  with the managed Telemetry on (--telemetry)', rate(telemetry), rate(base), (telemetry.perSecond / base.perSecond).toFixed(2)],
        ['  with Kubernetes Events off (--no-kube-events)', rate(backfills.quiet), rate(base), (backfills.quiet.perSecond / base.perSecond).toFixed(2)],
      );
    }
    if (trickles !== undefined) {
      const { base, sync } = trickles;
      rows.push(
        [`trickle ${RATE}/s for ${SECONDS}s, event to entry p50`, ms(sync.p50), ms(base.p50), (sync.p50 / base.p50).toFixed(2)],
        ['  p90', ms(sync.p90), ms(base.p90), (sync.p90 / base.p90).toFixed(2)],
        ['  p99', ms(sync.p99), ms(base.p99), (sync.p99 / base.p99).toFixed(2)],
        ['  max', ms(sync.max), ms(base.max), (sync.max / base.max).toFixed(2)],
      );
    }
    printTable([`measure (same run, same machine; concurrency ${CONCURRENCY})`, 'edge-registrar sync', 'direct client-node (baseline)', 'sync / baseline'], rows);
    if (backfills !== undefined) {
      const { base, shipped } = backfills;
      console.log(`\nclient-node's own makeApiClient (a new TLS connection per request), same ${VPS}-VPS backfill: ${rate(shipped)}, ${(shipped.perSecond / base.perSecond).toFixed(2)} of the baseline`);
    }
    if (backfills !== undefined) {
      const { sync, events } = backfills;
      // The daemon's defaults: 100 at once, 60 a minute, plus the drop notice on the Lease and the Lease's own leader Event.
      const bound = Math.ceil(100 + (60 * sync.seconds) / 60) + 2;
      console.log(`\nKubernetes Events during the ${VPS}-VPS backfill (${sync.seconds.toFixed(1)} s): ${events.written} written (${events.applied} Applied), bound 100 + 60/min × ${(sync.seconds / 60).toFixed(2)} min + 2 = ${bound}; one per entry would be ${VPS}; ${events.droppedCounted} dropped, counted on the Lease's EventsRateLimited series`);
    }
    if (trickles !== undefined) {
      const worst = (l: Latency): string => l.worst.map((w) => `#${w.index} ${ms(w.ms)}`).join(', ');
      console.log(`\ntrickle, slowest five (#n: the n-th event of ${RATE * SECONDS}): sync ${worst(trickles.sync)}; baseline ${worst(trickles.base)}`);
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((e: unknown) => { log(`[bench] cleanup: ${String(e)}`); });
    await rm(work, { recursive: true, force: true });
  }
}

await main();
