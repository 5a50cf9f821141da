/**
 * Every attack a pod on the network can make on the webhook's port, at once, against the real
 * webhook (`edge-registrar webhook`, its informers on a real API server, the chart's heap flags)
 * in a real 320 MiB memory cgroup, the chart's limit, given the API server's address as the chart
 * gives it (--api-server-cidrs 127.0.0.1/32, where this API server calls from). The attacks come
 * from other loopback addresses (test/harness/webhook-attack.ts: idle TCP connections, stalled
 * TLS handshakes, header-only requests announcing 64 KiB and 3 MiB, slow bodies, a flood of
 * valid-looking reviews), so every per-peer limit is met as attacking pods would meet it.
 * Meanwhile:
 *   - a real client (127.0.0.1, as the API server) sends a real review every 250 ms: each must be
 *     answered 200 within 1 s;
 *   - the API server, which calls the webhook through webhook-config/'s registration, takes
 *     WorkloadEntry writes, good and bad: the good are created, the bad denied by our rule, and
 *     none is refused for a webhook-call reason (a timeout, a refused connection, a 429 given up on).
 * The kernel must never OOM-kill the webhook, and its resident memory stays under the limit.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { admissionRequest, admissionReview, completeEntry } from '../fixtures/entries.ts';
import { capture } from '../harness/capture.ts';
import { postJson } from '../harness/https-client.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../harness/kube-cluster.ts';
import { createMemoryCgroup, memoryCgroupUnavailable, type MemoryCgroup } from '../harness/memory-cgroup.ts';
import { spawnWebhook, type WebhookProcess } from '../harness/processes.ts';

const LIMIT_MIB = 320;
const ATTACK_SECONDS = 40;
const REVIEW_DEADLINE_MS = 1_000;
const CHART_HEAP_FLAGS = '--max-old-space-size=128 --max-semi-space-size=16';
const MiB = 1024 * 1024;

const unavailable = await memoryCgroupUnavailable();
let dir = '';
let cluster: StartedCluster | undefined;
let cgroup: MemoryCgroup | undefined;
let webhook: WebhookProcess | undefined;
let ca = '';

beforeAll(async () => {
  if (unavailable !== undefined) return;
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-attack-'));
  cluster = await startCluster({ binaries: inject('binaries'), dir: join(dir, 'cluster'), withControllerManager: false });
  cgroup = await createMemoryCgroup(`edge-registrar-attack-${process.pid}`, LIMIT_MIB * MiB);
  webhook = await spawnWebhook(cluster, join(dir, 'certs'), dir, ['--api-server-cidrs', '127.0.0.1/32'], { env: { ...process.env, NODE_OPTIONS: CHART_HEAP_FLAGS }, wrap: cgroup.wrap });
  await webhook.ready();
  ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
});

afterAll(async () => {
  await webhook?.stop(5_000);
  await cgroup?.remove();
  await cluster?.stop();
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

async function metrics(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${webhook?.metricsPort ?? 0}/metrics`)).text();
}

const sample = (text: string, name: string): number => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? 0);

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;

/** The real client: a real review every 250 ms from 127.0.0.1 on keep-alive connections, until `until`. */
async function realReviews(until: number): Promise<{ latencies: number[]; statuses: Map<number, number> }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 4, ca });
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  while (Date.now() < until) {
    const started = performance.now();
    const answer = await Promise.race([
      postJson(webhook?.port ?? 0, '/validate', admissionReview(admissionRequest('CREATE', completeEntry())), ca, agent),
      new Promise<{ status: number }>((resolve) => setTimeout(() => { resolve({ status: 0 }); }, 5_000)),
    ]).catch(() => ({ status: -1 }));
    latencies.push(performance.now() - started);
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  agent.destroy();
  return { latencies, statuses };
}

type WriteResult = { kind: 'good' | 'bad'; outcome: 'created' | 'denied' | 'webhook-call' | 'other'; message: string };

/** WorkloadEntry writes through the API server, one good and one bad every second, until `until`. */
async function apiServerWrites(until: number): Promise<WriteResult[]> {
  const api = loadKubeConfig(kubeconfigFor(cluster!.state, 'admin')).makeApiClient(k8s.CustomObjectsApi);
  const results: WriteResult[] = [];
  for (let i = 0; Date.now() < until; i++) {
    for (const kind of ['good', 'bad'] as const) {
      const body = { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name: `vps-jp-${(kind === 'good' ? 1000 : 5000) + i}` }, spec: { address: kind === 'good' ? `103.21.${Math.floor(i / 250)}.${(i % 250) + 1}` : `10.0.0.${(i % 250) + 1}`, labels: { app: 'xrayr', country: 'jp' }, serviceAccount: 'xrayr-vm' } };
      try {
        await api.createNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: 'airport-prod', plural: 'workloadentries', body });
        results.push({ kind, outcome: 'created', message: '' });
      } catch (error) {
        const body = (error as { body?: unknown }).body;
        const message = typeof body === 'string' ? body : body !== undefined ? JSON.stringify(body) : (error as Error).message;
        // The API server says "failed calling webhook" when the call itself failed (timeout,
        // connection refused or reset, a 429 retried until the deadline), "denied the request" when
        // the webhook answered with a denial.
        const outcome = /failed calling webhook|context deadline exceeded|Internal error/i.test(message) ? 'webhook-call' : /denied the request/.test(message) ? 'denied' : 'other';
        results.push({ kind, outcome, message });
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  return results;
}

describe.skipIf(unavailable !== undefined)(`the webhook under every attack at once, in a ${LIMIT_MIB} MiB memory cgroup${unavailable === undefined ? '' : ` (skipped: no memory cgroup here: ${unavailable})`}`, () => {
  it('no OOM kill, resident memory under the limit, every real review answered 200 within 1 s, and no API server write refused for a webhook-call reason', async () => {
    const caDir = await mkdtemp(join(tmpdir(), 'attack-ca-'));
    const caFile = join(caDir, 'ca.crt');
    await writeFile(caFile, ca);
    const attack = capture(process.execPath, [fileURLToPath(new URL('../harness/webhook-attack.ts', import.meta.url)), String(webhook?.port ?? 0), caFile, String(ATTACK_SECONDS)]);
    // The attack takes hold for a few seconds before the measuring starts.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const until = Date.now() + (ATTACK_SECONDS - 5) * 1000;
    const [reviews, writes] = await Promise.all([realReviews(until), apiServerWrites(until)]);
    const attackResult = await attack;
    await rm(caDir, { recursive: true, force: true });
    const attacks = JSON.parse(attackResult.stdout) as Record<string, { made: number; sessions: number; answered: Record<string, number> }>;
    const text = await metrics();
    const closed = Object.fromEntries(['total', 'per-peer', 'untrusted-total', 'handshake-timeout', 'no-request', 'idle-untrusted'].map((reason) => [reason, sample(text, `edge_registrar_webhook_connections_closed_total{reason="${reason}"}`)]));
    const pid = webhook?.child.pid ?? 0;
    const peakRssMiB = Number(/VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN) / 1024;
    const [cgroupPeakMiB, oomKills] = [((await cgroup?.peakBytes()) ?? 0) / MiB, (await cgroup?.oomKills()) ?? 0];
    const latencies = [...reviews.latencies].sort((a, b) => a - b);
    const byOutcome = (kind: 'good' | 'bad') => Object.fromEntries(['created', 'denied', 'webhook-call', 'other'].map((o) => [o, writes.filter((w) => w.kind === kind && w.outcome === o).length]));
    console.error(
      `[webhook-attack] attacks ${JSON.stringify(attacks)}; closed by the guard ${JSON.stringify(closed)}; ` +
        `real reviews ${latencies.length} by status ${JSON.stringify(Object.fromEntries(reviews.statuses))}, p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${percentile(latencies, 0.99).toFixed(1)} ms, max ${latencies.at(-1)?.toFixed(1)} ms; ` +
        `API server writes good ${JSON.stringify(byOutcome('good'))} bad ${JSON.stringify(byOutcome('bad'))}; ` +
        `peak RSS ${peakRssMiB.toFixed(0)} MiB, cgroup peak ${cgroupPeakMiB.toFixed(0)} MiB, OOM kills ${oomKills}`,
    );
    expect(oomKills).toBe(0);
    expect(webhook?.child.exitCode).toBeNull();
    expect(peakRssMiB).toBeLessThan(LIMIT_MIB);
    expect([...reviews.statuses.keys()]).toEqual([200]);
    expect(latencies.at(-1)).toBeLessThan(REVIEW_DEADLINE_MS);
    expect(writes.filter((w) => w.outcome === 'webhook-call' || w.outcome === 'other').map((w) => w.message)).toEqual([]);
    expect(byOutcome('good').created, writes.find((w) => w.kind === 'good' && w.outcome !== 'created')?.message).toBeGreaterThan(20);
    expect(byOutcome('bad').denied).toBe(byOutcome('good').created);
    // The attack was real: every kind made its connections, and the guard closed them for each reason.
    for (const [name, made] of Object.entries(attacks)) expect(made.made, name).toBeGreaterThan(100);
    expect(attacks.flood?.answered['200'] ?? 0).toBeGreaterThan(1000);
    for (const reason of ['per-peer', 'untrusted-total', 'handshake-timeout'] as const) expect(closed[reason], reason).toBeGreaterThan(0);
  }, 180_000);
});
