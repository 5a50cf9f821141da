/**
 * The webhook's memory under saturating load: 32 keep-alive HTTPS connections posting
 * ~2 KB AdmissionReviews (CREATE, with managedFields and a last-applied annotation; see
 * support/admission-review.ts) to
 * /mutate and /validate as fast as it answers, for BENCH_SECONDS (60). Prints resident
 * memory and V8 heap every 10 s from the webhook's own /metrics, and the heap spaces at the
 * end. Run it with and without the chart's heap flags (WEBHOOK_NODE_OPTIONS) to compare:
 *   npm run bench:webhook-memory
 *   WEBHOOK_NODE_OPTIONS='--max-old-space-size=102 --max-semi-space-size=16' npm run bench:webhook-memory
 * Load goes to 127.0.0.1 only and stops after BENCH_SECONDS.
 */
import { spawn } from 'node:child_process';
import { Agent, request } from 'node:https';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { admissionReview } from './support/admission-review.ts';

const flags = (process.env.WEBHOOK_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
const seconds = Number(process.env.BENCH_SECONDS ?? 60);
const CONCURRENCY = 32;

const server = spawn(process.execPath, [...flags, fileURLToPath(new URL('../test/harness/webhook-process.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] });
const stdout = server.stdout;
const firstLine = await new Promise<string>((resolve) => createInterface({ input: stdout }).once('line', resolve));
stdout.resume();
const { port, metricsPort, ca } = JSON.parse(firstLine) as { port: number; metricsPort: number; ca: string };
const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY, ca });

let sent = 0;

const post = (): Promise<void> =>
  new Promise((resolve) => {
    const body = admissionReview(`u-${sent}`, 'CREATE');
    const path = sent % 2 === 0 ? '/mutate' : '/validate';
    sent++;
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', () => { resolve(); });
    req.end(body);
  });

async function metrics(): Promise<string[]> {
  return (await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).split('\n');
}
const mib = (lines: string[], series: string): number => Number(lines.find((l) => l.startsWith(`edge_registrar_${series} `))?.split(' ')[1] ?? Number.NaN) / 1048576;
async function memory(): Promise<string> {
  const lines = await metrics();
  return `rss ${mib(lines, 'process_resident_memory_bytes').toFixed(0)} MiB, heap total ${mib(lines, 'nodejs_heap_size_total_bytes').toFixed(0)} MiB, heap used ${mib(lines, 'nodejs_heap_size_used_bytes').toFixed(0)} MiB`;
}

console.log(`webhook ${flags.join(' ') || '(no heap flags)'}: ${CONCURRENCY} connections for ${seconds} s`);
const end = Date.now() + seconds * 1000;
const sampler = setInterval(() => {
  void memory().then((m) => { console.log(`${sent} requests: ${m}`); });
}, 10_000);
await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (Date.now() < end) await post();
}));
clearInterval(sampler);
const spaces = (await metrics()).filter((l) => l.startsWith('edge_registrar_nodejs_heap_space_size_total_bytes') && !l.endsWith(' 0'));
console.log(spaces.map((l) => l.replace(/ (\d+)$/, (_m, n: string) => ` ${(Number(n) / 1048576).toFixed(1)} MiB`)).join('\n'));
console.log(`done: ${sent} requests in ${seconds} s (${(sent / seconds).toFixed(0)}/s); ${await memory()}`);
agent.destroy();
server.kill('SIGTERM');
