/**
 * The faults the soak injects, each a small function that breaks one part of the stack and
 * returns once it is back (so faults never pile up unnoticed). A fault waits for what it
 * needs to have happened (a takeover, the rotated certificate being served) rather than for
 * a time, except where the fault is a duration (a pause).
 */
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { capture } from '../harness/capture.ts';
import type { RedisMode, SoakStack } from './stack.ts';

export interface FaultContext {
  stack: SoakStack;
  /** Stops the producer (sigma-api) around Redis faults: its own bookkeeping is not under test. */
  holdProducer(): Promise<void>;
  releaseProducer(): void;
  log(line: string): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const STREAM = 'sigma:vps-events';

/** Runs a Redis fault with the producer held (see FaultContext.holdProducer), releasing it however the fault ends. */
async function withProducerHeld(context: FaultContext, fault: () => Promise<void>): Promise<void> {
  await context.holdProducer();
  try {
    await fault();
  } finally {
    context.releaseProducer();
  }
}

/** Longer than the consumer's watchdog on the blocking read (blockMs 200 + 2 s in the soak). */
const REDIS_PAUSE_MS = 12_000;
/**
 * Longer than the old idle claim × max deliveries at the soak's scale (2 s × 10): with
 * Redis's delivery count as the poison signal, every valid event in flight was dead-lettered
 * after an outage this long and a handover.
 */
const WEBHOOK_DOWN_LONG_MS = 25_000;
/** Longer than the Lease (2 s in the soak): the other replica takes over. */
const PARTITION_MS = 15_000;
const RESYNC_FAILING_MS = 20_000;
const API_SERVER_PAUSE_MS = 8_000;
const WEBHOOK_DOWN_MS = 6_000;
/** How long a slot stays half-migrated: many of the daemon's reads (blockMs 200 in the soak) meet ASK. */
const SLOT_MIGRATING_MS = 8_000;
/** How long every attack on the webhook's port runs at once (test/harness/webhook-attack.ts). */
const WEBHOOK_ATTACK_SECONDS = 15;
const WEBHOOK_ATTACK = fileURLToPath(new URL('../harness/webhook-attack.ts', import.meta.url));
/** How long the daemon settles on a primary whose replica is paused, before that primary fails. */
const UNREPLICATED_MS = 3_000;

export const FAULTS = {
  /** The leader is killed mid-flight; its pending entries are claimed after its restart. */
  'sync-sigkill': async ({ stack }) => {
    stack.replica('a').kill();
    await stack.replica('a').waitLeader();
  },
  /**
   * A second replica starts as standby; the leader is stopped while events flow, so the new
   * leader takes over with the old one's writes in flight; then the first comes back and
   * the second goes, handing over again.
   */
  'replica-handover': async ({ stack }) => {
    const [a, b] = [stack.replica('a'), stack.replica('b')];
    b.start();
    await b.waitServing();
    await a.stop();
    await b.waitLeader();
    a.start();
    await a.waitServing();
    await b.stop();
    await a.waitLeader();
  },
  'redis-restart': (context) => withProducerHeld(context, () => context.stack.restartRedis()),
  'redis-pause': (context) =>
    withProducerHeld(context, async () => {
      context.stack.pauseRedis();
      try {
        await sleep(REDIS_PAUSE_MS);
      } finally {
        context.stack.resumeRedis();
      }
    }),
  'apiserver-restart': async ({ stack }) => {
    await stack.stopCluster();
    await sleep(2_000);
    await stack.startCluster();
  },
  'apiserver-pause': async ({ stack }) => {
    stack.pauseCluster();
    try {
      await sleep(API_SERVER_PAUSE_MS);
    } finally {
      stack.resumeCluster();
    }
  },
  /** failurePolicy Fail: every write is refused while it is down, and must be retried. */
  'webhook-down': async ({ stack }) => {
    await stack.stopWebhook();
    await sleep(WEBHOOK_DOWN_MS);
    await stack.startWebhook();
  },
  /**
   * Every attack a pod on the network can make on the webhook's port at once (idle TCP, stalled
   * handshakes, header-only requests of 64 KiB and 3 MiB, slow bodies, a flood of reviews), from
   * loopback addresses other than the API server's, while the daemon's writes go through it.
   * Done when the attack ends and the webhook is still the one that was running.
   */
  'webhook-attack': async ({ stack, log }) => {
    const { port, caFile } = stack.webhookEndpoint();
    const attack = await capture(process.execPath, [WEBHOOK_ATTACK, String(port), caFile, String(WEBHOOK_ATTACK_SECONDS)]);
    if (attack.code !== 0) throw new Error(`the attack itself failed (${attack.code}): ${attack.stderr}`);
    if (!stack.webhookRunning) throw new Error('the webhook did not survive the attack');
    const stats = JSON.parse(attack.stdout) as Record<string, { made: number; answered: Record<string, number> }>;
    log(`webhook-attack: ${Object.entries(stats).map(([name, s]) => `${name} ${s.made} connections`).join(', ')}; flood answered ${JSON.stringify(stats.flood?.answered ?? {})}`);
  },
  'webhook-cert-rotation': async ({ stack }) => {
    await stack.rotateWebhookCertificate();
  },
  /** (a) The webhook down for long (every write refused and retried), then a handover while it is still down. */
  'webhook-down-long': async ({ stack }) => {
    const [a, b] = [stack.replica('a'), stack.replica('b')];
    await stack.stopWebhook();
    await sleep(WEBHOOK_DOWN_LONG_MS);
    b.start();
    await b.waitServing();
    await a.stop();
    await b.waitLeader();
    await stack.startWebhook();
    a.start();
    await a.waitServing();
    await b.stop();
    await a.waitLeader();
  },
  /**
   * (b) The leader cut off from Redis and the API server while events keep coming: the
   * standby takes over; when the network heals, whatever the old leader had sent (a blocked
   * read above all) reaches Redis late. Then the old leader leads again.
   */
  'replica-partition': async ({ stack }) => {
    const [a, b] = [stack.replica('a'), stack.replica('b')];
    b.start();
    await b.waitServing();
    stack.partition('a');
    try {
      await b.waitLeader(PARTITION_MS + 30_000);
      await sleep(PARTITION_MS);
    } finally {
      stack.heal('a');
    }
    await sleep(2_000);
    await b.stop();
    await a.waitLeader();
  },
  /** (c) The leader's Redis connections broken again and again while it reads its pending list (the webhook down, so entries stay pending). */
  'redis-cut-while-reading-pending': async ({ stack }) => {
    await stack.stopWebhook();
    try {
      await sleep(3_000);
      for (let i = 0; i < 4; i++) {
        stack.cutRedis('a');
        await sleep(300 + i * 200);
      }
    } finally {
      await stack.startWebhook();
    }
  },
  /**
   * (d) SIGTERM in the middle of a resync that restores the whole fleet (its entries deleted
   * behind the daemon's back by a break-glass user): the replica must stop writing and exit
   * well within the 30 s grace period; the supervisor restarts it and the next resync
   * restores the rest.
   */
  'sigterm-during-resync': async ({ stack, log }) => {
    const logFile = stack.replicaLogFile('a');
    const from = (await stat(logFile)).size;
    const deleted = await stack.cluster.kubectl('breakglass', ['-n', 'airport-prod', 'delete', 'workloadentries', '-l', 'app.kubernetes.io/managed-by=edge-registrar', '--wait=false']);
    if (deleted.code !== 0) throw new Error(`deleting the entries failed: ${deleted.stderr}`);
    const deadline = Date.now() + 40_000;
    while (!(await readFile(logFile, 'utf8')).slice(from).includes('"msg":"drift: entry restored"')) {
      if (Date.now() > deadline) throw new Error('no resync restored an entry within 40 s');
      await sleep(100);
    }
    const { result, ms } = await stack.replica('a').terminate(30_000);
    log(`sigterm-during-resync: the replica ${result} ${ms} ms after SIGTERM`);
    if (result !== 'exited' || ms > 25_000) throw new Error(`the replica did not exit within the grace period (${result} after ${ms} ms)`);
    await stack.replica('a').waitLeader();
    // The restarted replica's first resync restores what the stopped one had not.
    const metrics = `http://127.0.0.1:${stack.replica('a').port}/metrics`;
    const resynced = Date.now() + 60_000;
    while (!/^edge_registrar_sync_resyncs_total\{outcome="completed"\} [1-9]/m.test(await fetch(metrics).then((r) => r.text(), () => ''))) {
      if (Date.now() > resynced) throw new Error('the restarted replica completed no resync within 60 s');
      await sleep(500);
    }
  },
  /** (e) Every resync fails for a while (the sync identity may not list entries): retried with back-off, events still applied. */
  'resync-failing': async ({ stack }) => {
    const role = (await stack.cluster.kubectl('admin', ['-n', 'airport-prod', 'get', 'role', 'workloadentry-editor', '-o', 'json'])).stdout;
    const withoutList = JSON.parse(role) as { rules: { verbs: string[] }[] };
    for (const rule of withoutList.rules) rule.verbs = rule.verbs.filter((v) => v !== 'list');
    const patched = await stack.cluster.kubectl('admin', ['replace', '-f', '-'], JSON.stringify(withoutList));
    if (patched.code !== 0) throw new Error(`dropping list from the Role failed: ${patched.stderr}`);
    try {
      await sleep(RESYNC_FAILING_MS);
    } finally {
      const restored = JSON.parse(role) as { metadata: Record<string, unknown> };
      delete restored.metadata.resourceVersion;
      await stack.cluster.kubectl('admin', ['apply', '-f', '-'], JSON.stringify(restored));
    }
  },
  /**
   * On a Redis Cluster: the stream's primary hands over to its replica (`CLUSTER FAILOVER`, a
   * planned switchover), with the daemon's reads, commits and acknowledgements in flight.
   */
  'cluster-failover': (context) =>
    withProducerHeld(context, async () => {
      await context.stack.redisCluster().failover(STREAM);
      await context.stack.redisCluster().waitHealthy(60_000);
    }),
  /**
   * On a Redis Cluster: the stream's primary SIGKILLed; its replica is promoted after the node
   * timeout, with whatever the old primary had not replicated lost (the daemon's last commits
   * and acknowledgements: their events are delivered and settled again). The node restarts,
   * as its pod would, and rejoins as a replica.
   */
  'cluster-primary-kill': (context) =>
    withProducerHeld(context, async () => {
      const [killed] = await context.stack.redisCluster().killPrimary(STREAM);
      await context.stack.redisCluster().startNode(killed);
      await context.stack.redisCluster().waitHealthy(60_000);
    }),
  /** On a Redis Cluster: the stream's slot moved to another primary (MOVED, then ASK while it migrates). */
  'cluster-reshard': (context) =>
    withProducerHeld(context, async () => {
      await context.stack.redisCluster().reshard(STREAM);
    }),
  /**
   * On a Redis Cluster: the stream's slot held half-way through a migration for a while, every
   * key already at the target: the source answers ASK, and the daemon's reads must follow it
   * (read there after ASKING) rather than cut and reconnect until the migration ends. The
   * producer is held: its WAIT on the source's connection cannot count a write ASKed elsewhere.
   */
  'cluster-slot-migrating': (context) =>
    withProducerHeld(context, async () => {
      await context.stack.redisCluster().holdSlotMigrating(STREAM, () => sleep(SLOT_MIGRATING_MS));
      await context.stack.redisCluster().waitHealthy(60_000);
    }),
  /**
   * On a Redis Cluster: a failover that loses what the primary had not replicated. The webhook
   * goes down so the daemon holds read events unsettled; the producer is held (its WAIT would
   * fail); the stream's replica is paused, the webhook comes back, and the daemon settles events
   * on the primary alone; then the primary is killed and the paused replica promoted. Those
   * commits are lost: their events come back pending and are applied again (a second outcome,
   * at most --concurrency of them, since each waits for a replica), and any claim that met a
   * lost release is read again in stream order.
   */
  'cluster-failover-unreplicated': (context) =>
    withProducerHeld(context, async () => {
      const { stack } = context;
      await stack.stopWebhook();
      await sleep(WEBHOOK_DOWN_MS);
      await stack.redisCluster().failoverLosingWrites(STREAM, async () => {
        await stack.startWebhook();
        await sleep(UNREPLICATED_MS);
      });
    }),
  /**
   * (standalone) The leader's Redis connections reset again and again while events flow: a
   * commit, a mark or an acknowledgement in flight loses its reply, and ioredis sends it again
   * after reconnecting. A commit that ran twice is still its event's (applied, not superseded),
   * and a mark sent twice counts once.
   */
  'redis-cut-under-load': async ({ stack }) => {
    for (let i = 0; i < 6; i++) {
      stack.cutRedis('a');
      await sleep(400 + i * 150);
    }
  },
} satisfies Record<string, (context: FaultContext) => Promise<void>>;

export type FaultKind = keyof typeof FAULTS;

/** Faults that need standalone Redis: its process restarted or paused, or a replica's proxied connections cut. */
const STANDALONE_ONLY: readonly FaultKind[] = ['redis-restart', 'redis-pause', 'replica-partition', 'redis-cut-while-reading-pending', 'redis-cut-under-load'];
const CLUSTER_ONLY: readonly FaultKind[] = ['cluster-failover', 'cluster-primary-kill', 'cluster-reshard', 'cluster-slot-migrating', 'cluster-failover-unreplicated'];

/** The fault kinds a run injects on `mode`: every kind that does not need the other Redis deployment. */
export function faultKindsFor(mode: RedisMode): FaultKind[] {
  const excluded = mode === 'cluster' ? STANDALONE_ONLY : CLUSTER_ONLY;
  return (Object.keys(FAULTS) as FaultKind[]).filter((kind) => !excluded.includes(kind));
}
