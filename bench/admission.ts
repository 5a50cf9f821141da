/**
 * `npm run bench:admission`: the webhook's /validate and /mutate beside their ceiling, a bare
 * Node https server that parses the body and answers a fixed "allowed" review (see
 * support/bare-https.ts), in the same run, each in its own process, loaded by autocannon over
 * HTTPS with keep-alive and a realistic ~2-3 KB UPDATE review. The webhook runs as a pod
 * would: the chart's heap flags, log level info, logs to a file (a drained stdout).
 *
 * - throughput: 32 connections as fast as each answers (after a warm-up);
 * - latency: a fixed 1,000 requests a second, client-side p50/p99, and the webhook's own
 *   request histogram over the same window;
 * - scale: the same latency with 100, 1,000 and 10,000 entries and 1,000 Services in the
 *   webhook's caches.
 * Load goes to 127.0.0.1 only and every run ends after its duration.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { admissionReview } from './support/admission-review.ts';
import { webhookBuckets, type Buckets } from './support/histogram.ts';
import { printTable } from './stats.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '15' }, connections: { type: 'string', default: '32' }, rate: { type: 'string', default: '1000' } }, strict: false });
const SECONDS = Number(values.seconds);
const CONNECTIONS = Number(values.connections);
const RATE = Number(values.rate);
const HEAP_FLAGS = ['--max-old-space-size=128', '--max-semi-space-size=16'];
const SCALE_ENTRIES = [100, 1_000, 10_000];
const SCALE_SERVICES = 1_000;

async function start(script: string, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; info: Record<string, unknown> }> {
  const child = spawn(process.execPath, [...HEAP_FLAGS, fileURLToPath(new URL(script, import.meta.url))], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const stdout = child.stdout;
  const line = await new Promise<string>((resolve) => createInterface({ input: stdout }).once('line', resolve));
  stdout.resume();
  return { child, info: JSON.parse(line) as Record<string, unknown> };
}

const body = admissionReview('bench-uid');
function load(port: number, path: string, seconds: number, overallRate?: number): Promise<autocannon.Result> {
  return autocannon({
    url: `https://127.0.0.1:${port}${path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    connections: CONNECTIONS,
    duration: seconds,
    ...(overallRate !== undefined ? { overallRate } : {}),
  });
}

/** The webhook's own request-duration histogram, cumulative buckets for one handler. */
async function histogram(metricsPort: number, handler: string): Promise<Buckets> {
  return (await webhookBuckets(metricsPort)).get(handler) ?? new Map<number, number>();
}

/** The bucket bound below which 99 % of the requests between two snapshots fell. */
function p99Bound(before: Buckets, after: Buckets): string {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  for (const le of bounds) {
    if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= 0.99 * total) return le === Infinity ? '> largest bucket' : `≤ ${(le * 1000).toFixed(le < 0.001 ? 2 : 1)} ms`;
  }
  return 'n/a';
}

const logDir = await mkdtemp(join(tmpdir(), 'edge-registrar-bench-'));
const webhook = await start('../test/harness/webhook-process.ts', { EDGE_REGISTRAR_LOG_LEVEL: 'info', WEBHOOK_LOG_FILE: join(logDir, 'webhook.log') });
// The same webhook logging only warnings: what the per-admission info line costs.
const quiet = await start('../test/harness/webhook-process.ts', { EDGE_REGISTRAR_LOG_LEVEL: 'warn', WEBHOOK_LOG_FILE: join(logDir, 'webhook-warn.log') });
const bare = await start('./support/bare-https.ts');
const webhookPort = webhook.info.port as number;
const metricsPort = webhook.info.metricsPort as number;
const barePort = bare.info.port as number;

try {
  console.error(`[bench] warm-up (3 s each), then ${SECONDS} s per run, ${CONNECTIONS} connections; webhook logs in ${logDir}`);
  const targets: [string, number, string, string | undefined][] = [
    ['bare https (ceiling)', barePort, '/', undefined],
    ['webhook /validate', webhookPort, '/validate', 'validate'],
    ['webhook /mutate', webhookPort, '/mutate', 'mutate'],
    ['webhook /validate, log level warn', quiet.info.port as number, '/validate', undefined],
    ['webhook /mutate, log level warn', quiet.info.port as number, '/mutate', undefined],
  ];
  for (const [, port, path] of targets) await load(port, path, 3);

  const throughput: number[] = [];
  for (const [name, port, path] of targets) {
    console.error(`[bench] throughput: ${name}`);
    const result = await load(port, path, SECONDS);
    if (result.errors > 0 || result.non2xx > 0) throw new Error(`${name}: ${result.errors} errors, ${result.non2xx} non-2xx answers`);
    throughput.push(result.requests.average);
  }
  const latency: [string, string, string, string][] = [];
  for (const [name, port, path, handler] of targets) {
    console.error(`[bench] latency at ${RATE}/s: ${name}`);
    const before = handler === undefined ? undefined : await histogram(metricsPort, handler);
    const result = await load(port, path, SECONDS, RATE);
    const own = handler === undefined || before === undefined ? '-' : p99Bound(before, await histogram(metricsPort, handler));
    latency.push([name, `${result.latency.p50} ms`, `${result.latency.p99} ms`, own]);
  }
  // Scale: the same fixed rate with the caches holding 100, 1,000 and 10,000 entries and
  // 1,000 Services with selectors (every review is checked against each selector).
  const scale: string[][] = [];
  let smallest: number | undefined;
  for (const entries of SCALE_ENTRIES) {
    const sized = await start('../test/harness/webhook-process.ts', { EDGE_REGISTRAR_LOG_LEVEL: 'info', WEBHOOK_LOG_FILE: join(logDir, `webhook-${entries}.log`), WEBHOOK_VIEW_ENTRIES: String(entries), WEBHOOK_VIEW_SERVICES: String(SCALE_SERVICES) });
    try {
      const port = sized.info.port as number;
      const sizedMetrics = sized.info.metricsPort as number;
      await load(port, '/validate', 3);
      console.error(`[bench] scale: ${entries} entries, ${SCALE_SERVICES} Services, ${RATE}/s on /validate`);
      const before = await histogram(sizedMetrics, 'validate');
      const result = await load(port, '/validate', SECONDS, RATE);
      const own = p99Bound(before, await histogram(sizedMetrics, 'validate'));
      smallest ??= result.latency.p99;
      scale.push([`${entries} entries, ${SCALE_SERVICES} Services`, `${result.latency.p50} ms`, `${result.latency.p99} ms`, (result.latency.p99 / smallest).toFixed(2), own]);
    } finally {
      sized.child.kill('SIGTERM');
    }
  }

  const ceiling = throughput[0] ?? Number.NaN;
  console.log(`\nAdmission throughput, ${CONNECTIONS} connections, ${SECONDS} s each (requests a second, mean of per-second samples)\n`);
  printTable(
    ['target', 'requests/s', 'of the ceiling'],
    targets.map(([name], i) => [name, (throughput[i] ?? Number.NaN).toFixed(0), `${(((throughput[i] ?? Number.NaN) / ceiling) * 100).toFixed(0)} %`]),
  );
  console.log(`\nAdmission latency at a fixed ${RATE} requests a second, ${SECONDS} s each\n`);
  printTable(['target', 'client p50', 'client p99', "webhook's own p99 (histogram bucket)"], latency);
  console.log(`\nScale: /validate at ${RATE} requests a second with the caches at each size, ${SECONDS} s each\n`);
  printTable(['caches', 'client p50', 'client p99', 'p99 / smallest', "webhook's own p99"], scale);
} finally {
  webhook.child.kill('SIGTERM');
  quiet.child.kill('SIGTERM');
  bare.child.kill('SIGTERM');
}
