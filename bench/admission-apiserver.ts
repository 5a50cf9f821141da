/**
 * `npm run bench:admission-apiserver` (options `-- --rate 100 --seconds 30`): admission as the
 * API server sees it. kubectl-equivalent clients (client-node as the test user alice) write
 * WorkloadEntries at a fixed rate (creates of new entries and updates of existing ones) through
 * the real kube-apiserver, which calls the real webhook (its own process, the chart's heap flags,
 * log level info) for each. Reported, for the same window:
 *
 * - the API server's own `apiserver_admission_webhook_admission_duration_seconds` for each of
 *   our two webhooks: the share of calls under 5 ms and the p99 interpolated in its buckets
 *   (the first bucket is 5 ms, so "p99 under 5 ms" is "99 % in the first bucket");
 * - the clients' write latency, beside a baseline run of the same writes with our webhook
 *   configurations removed: what the guarded path costs a kubectl user.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { loadKubeConfig, makeApiClient, WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL } from '../src/kube/client.ts';
import { ensureKubeBinaries } from '../test/harness/kube-build.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../test/harness/kube-cluster.ts';
import { spawnWebhook } from '../test/harness/processes.ts';
import { histogramBuckets, webhookBuckets, type Buckets } from './support/histogram.ts';
import { percentile, printTable } from './stats.ts';

const { values } = parseArgs({ options: { rate: { type: 'string', default: '100' }, seconds: { type: 'string', default: '30' } } });
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const NAMESPACE = 'airport-prod';
const WEBHOOK_NODE_OPTIONS = '--max-old-space-size=128 --max-semi-space-size=16';
const log = (line: string): void => { console.error(line); };

/** The API server's webhook admission histogram for our webhooks, by webhook name (operations and outcomes summed). */
async function admissionBuckets(cluster: StartedCluster): Promise<Map<string, Buckets>> {
  const res = await cluster.kubectl('admin', ['get', '--raw', '/metrics']);
  if (res.code !== 0) throw new Error(res.stderr);
  const byWebhook = histogramBuckets(res.stdout, 'apiserver_admission_webhook_admission_duration_seconds', 'name');
  return new Map([...byWebhook].filter(([name]) => name.includes('edge-registrar')));
}

/** Share under 5 ms and the p99 by linear interpolation within the bucket it falls in. */
function summarize(before: Buckets | undefined, after: Buckets): { calls: number; under5ms: number; p99: number } {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const delta = (le: number): number => (after.get(le) ?? 0) - (before?.get(le) ?? 0);
  const calls = delta(Infinity);
  const target = 0.99 * calls;
  let previousBound = 0;
  let previousCount = 0;
  let p99 = Number.NaN;
  for (const le of bounds) {
    const count = delta(le);
    if (count >= target) {
      p99 = le === Infinity ? Infinity : previousBound + ((target - previousCount) / Math.max(1, count - previousCount)) * (le - previousBound);
      break;
    }
    previousBound = le;
    previousCount = count;
  }
  return { calls, under5ms: calls === 0 ? Number.NaN : delta(0.005) / calls, p99 };
}

interface WriteRun {
  writes: number;
  failures: number;
  latencies: number[];
}

/** RATE writes a second for SECONDS: a create of a new entry, or an update of one created earlier. */
async function writeLoad(cluster: StartedCluster, prefix: string, seconds = SECONDS): Promise<WriteRun> {
  const api = makeApiClient(loadKubeConfig(kubeconfigFor(cluster.state, 'alice')), k8s.CustomObjectsApi, 10_000);
  const created: string[] = [];
  const latencies: number[] = [];
  let failures = 0;
  let next = 0;
  const inFlight = new Set<Promise<void>>();
  const write = async (i: number): Promise<void> => {
    const update = created.length > 10 && i % 5 < 2;
    const started = performance.now();
    try {
      if (update) {
        const name = created[i % created.length] as string;
        await api.patchNamespacedCustomObject(
          { group: WORKLOAD_ENTRY_GROUP, version: 'v1', namespace: NAMESPACE, plural: WORKLOAD_ENTRY_PLURAL, name, body: [{ op: 'replace', path: '/spec/labels/version', value: `v${i}` }] },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
        );
      } else {
        const name = `vps-jp-${prefix}${i}`;
        await api.createNamespacedCustomObject({
          group: WORKLOAD_ENTRY_GROUP,
          version: 'v1',
          namespace: NAMESPACE,
          plural: WORKLOAD_ENTRY_PLURAL,
          body: {
            apiVersion: 'networking.istio.io/v1',
            kind: 'WorkloadEntry',
            metadata: { name, namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp' } },
            spec: { address: `45.${78 + Number(prefix)}.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`, labels: { app: 'xrayr', version: 'v1', country: 'jp' }, serviceAccount: 'xrayr-vm' },
          },
        });
        created.push(name);
      }
      latencies.push(performance.now() - started);
    } catch {
      failures++;
    }
  };
  const started = performance.now();
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * RATE);
    while (next < due) {
      const p = write(next++).finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(inFlight);
  return { writes: next, failures, latencies };
}

const work = await mkdtemp(join(tmpdir(), 'edge-registrar-bench-apiserver-'));
const cleanups: (() => Promise<unknown>)[] = [];
try {
  const cluster = await startCluster({ binaries: await ensureKubeBinaries(log), dir: join(work, 'kube'), withControllerManager: false, log });
  cleanups.push(() => cluster.stop());
  await mkdir(join(work, 'logs'));
  const webhook = await spawnWebhook(cluster, join(work, 'certs'), join(work, 'logs'), ['--log-level', 'info'], { env: { ...process.env, NODE_OPTIONS: WEBHOOK_NODE_OPTIONS } });
  cleanups.push(() => webhook.stop());
  await webhook.ready();

  log(`[bench] warm-up, then ${RATE} writes a second for ${SECONDS} s through the API server with the webhook`);
  await writeLoad(cluster, '0', 5);
  const before = await admissionBuckets(cluster);
  const ownBefore = await webhookBuckets(webhook.metricsPort);
  const guarded = await writeLoad(cluster, '1');
  const after = await admissionBuckets(cluster);
  const ownAfter = await webhookBuckets(webhook.metricsPort);

  log('[bench] baseline: the same writes with the webhook configurations removed');
  for (const kind of ['mutatingwebhookconfiguration', 'validatingwebhookconfiguration']) {
    const res = await cluster.kubectl('admin', ['delete', kind, 'edge-registrar']);
    if (res.code !== 0) throw new Error(res.stderr);
  }
  // The API server drops the webhooks through its own informer: give it a moment, then prove it.
  await new Promise((r) => setTimeout(r, 3_000));
  const unguarded = await writeLoad(cluster, '2');

  const ms = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(1)} ms` : String(n));
  console.log(`\nThrough the real API server: ${RATE} WorkloadEntry writes a second for ${SECONDS} s (creates and updates, as the user alice)\n`);
  printTable(
    ['webhook', 'calls', 'under 5 ms', 'p99 (interpolated)'],
    [
      ...[...after].map(([name, buckets]) => {
        const s = summarize(before.get(name), buckets);
        return [`${name} (API server's histogram)`, String(s.calls), `${(s.under5ms * 100).toFixed(1)} %`, ms(s.p99 * 1000)];
      }),
      ...[...ownAfter].map(([handler, buckets]) => {
        const s = summarize(ownBefore.get(handler), buckets);
        return [`/${handler} (the webhook's own histogram)`, String(s.calls), `${(s.under5ms * 100).toFixed(1)} %`, ms(s.p99 * 1000)];
      }),
    ],
  );
  console.log('');
  const row = (name: string, run: WriteRun): string[] => {
    const sorted = [...run.latencies].sort((a, b) => a - b);
    return [name, `${run.writes} (${run.failures} failed)`, ms(percentile(sorted, 50)), ms(percentile(sorted, 99))];
  };
  printTable(['client writes', 'writes', 'p50', 'p99'], [row('with edge-registrar webhooks', guarded), row('without (baseline, same run)', unguarded)]);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => { log(`[bench] cleanup: ${String(error)}`); });
  await rm(work, { recursive: true, force: true });
}
