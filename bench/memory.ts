/**
 * `npm run bench:memory` (options `-- --vps 10000 --load-seconds 300`): the memory of the
 * webhook and the sync daemon as the chart runs them, each in a memory cgroup with the
 * chart's limit and with the chart's NODE_OPTIONS (both read from `helm template`), against
 * the real API server and Redis:
 *
 *   at rest   N VPSs registered through the sync daemon (backfill, then a resync that lists
 *             them all); the webhook's informers hold the N entries. Resident memory of each.
 *   load      the webhook saturated for --load-seconds (32 keep-alive HTTPS connections
 *             posting ~2 KB reviews to /validate and /mutate); meanwhile the sync daemon
 *             applies N moves published at once. Peak resident memory, the cgroup's peak
 *             charge, OOM kills, and whether each process is still the one that started.
 *
 * `--heap-snapshots DIR`: at rest, each process writes a V8 heap snapshot into DIR and the run
 * prints what each heap is made of, then stops (a snapshot costs about the heap again in
 * memory, so this run uses no cgroup and skips the load).
 *
 * The cgroup is what makes "inside the limit" a fact: past it the kernel kills the process,
 * as it would the container. Without write access to a memory cgroup (see support/cgroup.ts)
 * the run says so and reports the heap flags' bound only.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { parseAllDocuments } from 'yaml';
import { eventFields, publishMany } from '../src/sync/publisher.ts';
import { capture } from '../test/harness/capture.ts';
import { ensureHelm } from '../test/harness/helm-build.ts';
import { ensureKubeBinaries } from '../test/harness/kube-build.ts';
import { startCluster } from '../test/harness/kube-cluster.ts';
import { spawnSync, spawnWebhook } from '../test/harness/processes.ts';
import { ensureRedisServer, startRedis } from '../test/harness/redis-server.ts';
import { unacknowledgedEvents } from '../test/harness/stream-group.ts';
import { admissionReview } from './support/admission-review.ts';
import { createMemoryCgroup, type MemoryCgroup } from './support/cgroup.ts';
import { summarizeHeapSnapshot } from './support/heap-summary.ts';
import { printTable } from './stats.ts';

const { values } = parseArgs({ options: { vps: { type: 'string', default: '10000' }, 'load-seconds': { type: 'string', default: '300' }, 'heap-snapshots': { type: 'string' } } });
const SNAPSHOT_DIR = values['heap-snapshots'];
const VPS = Number(values.vps);
const LOAD_SECONDS = Number(values['load-seconds']);
const STREAM = 'sigma:vps-events';
const GROUP = 'edge-registrar';
const MIB = 1024 * 1024;
const log = (line: string): void => { console.error(line); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Sizing {
  nodeOptions: string;
  limitBytes: number;
  limit: string;
}

/** The chart's NODE_OPTIONS and memory limit for each component, as `helm template` renders them. */
async function chartSizing(): Promise<Record<'webhook' | 'sync', Sizing>> {
  const helm = await ensureHelm(log);
  const chart = fileURLToPath(new URL('../charts/edge-registrar', import.meta.url));
  const home = join(tmpdir(), 'edge-registrar-helm-home');
  const res = await capture(helm, ['template', 'edge-registrar', chart, '--namespace', 'edge-registrar', '--set', 'image.repository=edge-registrar-bench/edge-registrar', '--set', 'networkPolicy.allowAnySourceToWebhook=true'], { env: { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') } });
  if (res.code !== 0) throw new Error(res.stderr);
  type Container = { args?: string[]; env?: { name: string; value?: string }[]; resources?: { limits?: { memory?: string } } };
  const containers = parseAllDocuments(res.stdout)
    .map((d) => d.toJS() as { kind?: string; spec?: { template?: { spec?: { containers?: Container[] } } } } | null)
    .filter((o) => o?.kind === 'Deployment')
    .flatMap((o) => o?.spec?.template?.spec?.containers ?? []);
  const sizing = (command: string): Sizing => {
    const container = containers.find((c) => c.args?.[0] === command);
    const limit = container?.resources?.limits?.memory ?? '';
    const match = /^(\d+)Mi$/.exec(limit);
    if (container === undefined || match === null) throw new Error(`the chart's ${command} container has no memory limit in Mi (${limit})`);
    return { nodeOptions: container.env?.find((e) => e.name === 'NODE_OPTIONS')?.value ?? '', limitBytes: Number(match[1]) * MIB, limit };
  };
  return { webhook: sizing('webhook'), sync: sizing('sync') };
}

/** Resident memory by mapping: the Node binary's pages, anonymous memory (the V8 heap among it), malloc's heap. */
async function residentByMapping(pid: number): Promise<string> {
  const byName = new Map<string, number>();
  let name = '';
  for (const line of (await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping !== null) name = mapping[1] === '' ? 'anonymous' : (mapping[1] ?? '').endsWith('/bin/node') ? 'the node binary' : (mapping[1] ?? '');
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss !== null) byName.set(name, (byName.get(name) ?? 0) + Number(rss[1]) * 1024);
  }
  return [...byName].sort((a, b) => b[1] - a[1]).filter(([, bytes]) => bytes >= MIB).map(([what, bytes]) => `${what} ${(bytes / MIB).toFixed(0)} MiB`).join(', ');
}

async function residentBytes(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(/(\d+) kB/.exec(status.split('\n').find((l) => l.startsWith(key)) ?? '')?.[1] ?? Number.NaN) * 1024;
  return { rss: kib('VmRSS:'), peak: kib('VmHWM:') };
}

/** One progress line: resident memory, and the V8 heap and memory outside it from the process's own /metrics. */
async function heapLine(component: string, pid: number, metricsPort: number): Promise<string> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(2_000) })).text();
  const mib = (series: string): string => (Number(new RegExp(`^edge_registrar_${series} (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN) / MIB).toFixed(0);
  return `[bench] ${component}: rss ${((await residentBytes(pid)).rss / MIB).toFixed(0)} MiB, heap used ${mib('nodejs_heap_size_used_bytes')} of ${mib('nodejs_heap_size_total_bytes')} MiB, external ${mib('nodejs_external_memory_bytes')} MiB`;
}

function fleetEvents(n: number, generation: number): string[][] {
  return Array.from({ length: n }, (_, i) => {
    const built = eventFields({ event: 'register', vps_id: `mem-${i}`, name: `vps-us-${i}`, address: `45.${77 + generation}.${Math.floor(i / 250)}.${(i % 250) + 1}`, country: 'us' });
    if (!built.ok) throw new Error(built.message);
    return built.fields;
  });
}

/** The file's last `count` bytes as text, without reading the rest (a snapshot runs to many MiB). */
async function lastBytes(path: string, count: number): Promise<string> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const buffer = Buffer.alloc(Math.min(count, size));
    await file.read(buffer, 0, buffer.length, size - buffer.length);
    return buffer.toString('utf8');
  } finally {
    await file.close();
  }
}

/** Signals the process to write a heap snapshot into dir and waits until the file is complete. */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(await readdir(dir));
  process.kill(pid, 'SIGUSR2');
  for (let waited = 0; waited < 300_000; waited += 1_000) {
    await sleep(1_000);
    const file = (await readdir(dir)).find((f) => !before.has(f) && f.includes(`.${pid}.`) && f.endsWith('.heapsnapshot'));
    // Written in one go; complete once its JSON closes, which its last bytes show.
    if (file !== undefined && (await lastBytes(join(dir, file), 16)).trimEnd().endsWith('}')) return join(dir, file);
  }
  throw new Error(`process ${pid} wrote no heap snapshot into ${dir}`);
}

async function drained(redis: Redis, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await unacknowledgedEvents(redis, STREAM, GROUP)) !== 0) {
    if (Date.now() > deadline) throw new Error('the sync daemon did not apply every event in time');
    await sleep(1_000);
  }
}

/** RSS of a Node process that only imports `modules` and idles: the floor under each process. */
async function importFloor(modules: string[]): Promise<number> {
  const code = `${modules.map((m) => `await import(${JSON.stringify(m)});`).join(' ')} setInterval(() => undefined, 60_000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: 'ignore', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  try {
    await sleep(3_000);
    return (await residentBytes(child.pid ?? 0)).rss;
  } finally {
    child.kill('SIGKILL');
  }
}

const work = await mkdtemp(join(tmpdir(), 'edge-registrar-bench-memory-'));
const cleanups: (() => Promise<unknown>)[] = [];
try {
  const sizing = await chartSizing();
  log(`[bench] chart: webhook ${sizing.webhook.limit} "${sizing.webhook.nodeOptions}", sync ${sizing.sync.limit} "${sizing.sync.nodeOptions}"`);
  const cluster = await startCluster({ binaries: await ensureKubeBinaries(log), dir: join(work, 'kube'), withControllerManager: false, log });
  cleanups.push(() => cluster.stop());
  const redisServer = await startRedis({ binary: await ensureRedisServer(log) });
  cleanups.push(() => redisServer.stop());
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  cleanups.push(() => { redis.disconnect(); return Promise.resolve(); });
  await mkdir(join(work, 'logs'));

  const cgroups: Partial<Record<'webhook' | 'sync', MemoryCgroup>> = {};
  for (const component of ['webhook', 'sync'] as const) {
    if (SNAPSHOT_DIR !== undefined) break;
    const cgroup = await createMemoryCgroup(`edge-registrar-bench-${component}-${process.pid}`, sizing[component].limitBytes, log);
    if (cgroup !== undefined) {
      cgroups[component] = cgroup;
      cleanups.push(() => cgroup.remove().catch(() => undefined));
    }
  }
  const snapshotFlags = SNAPSHOT_DIR === undefined ? '' : ` --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${SNAPSHOT_DIR}`;
  if (SNAPSHOT_DIR !== undefined) await mkdir(SNAPSHOT_DIR, { recursive: true });
  const env = (component: 'webhook' | 'sync'): NodeJS.ProcessEnv => ({ ...process.env, NODE_OPTIONS: `${sizing[component].nodeOptions}${snapshotFlags}` });

  const webhook = await spawnWebhook(cluster, join(work, 'certs'), join(work, 'logs'), ['--log-level', 'info'], { env: env('webhook') });
  cleanups.push(() => webhook.stop());
  await cgroups.webhook?.add(webhook.child.pid ?? 0);
  await webhook.ready();
  const sync = await spawnSync(cluster, redisServer.url, join(work, 'logs'), ['--consumer', 'bench', '--concurrency', '32', '--resync-interval', '30', '--log-level', 'info'], { env: env('sync') });
  cleanups.push(() => sync.stop());
  await cgroups.sync?.add(sync.child.pid ?? 0);
  await sync.ready();

  // The floor: both processes serving, nothing registered yet.
  await sleep(5_000);
  const empty = { webhook: await residentBytes(webhook.child.pid ?? 0), sync: await residentBytes(sync.child.pid ?? 0) };
  log(`[bench] at rest: ${VPS} VPSs registered through the sync daemon`);
  await publishMany(redis, STREAM, fleetEvents(VPS, 0));
  await drained(redis, 900_000);
  // A resync lists every entry and reads every state record: the daemon's largest working set.
  const resyncs = async (): Promise<number> => Number(/^edge_registrar_sync_resyncs_total\{outcome="completed"\} (\d+)/m.exec(await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text())?.[1] ?? 0);
  const before = await resyncs();
  while ((await resyncs()) === before) await sleep(1_000);
  await sleep(5_000);
  const rest = { webhook: await residentBytes(webhook.child.pid ?? 0), sync: await residentBytes(sync.child.pid ?? 0) };
  if (SNAPSHOT_DIR !== undefined) {
    for (const [component, child, port] of [['webhook', webhook.child, webhook.metricsPort], ['sync', sync.child, sync.port]] as const) {
      log(await heapLine(component, child.pid ?? 0, port));
      log(`[bench] ${component}: resident by mapping: ${await residentByMapping(child.pid ?? 0)}`);
      const file = await heapSnapshot(child.pid ?? 0, SNAPSHOT_DIR);
      const { total, groups } = summarizeHeapSnapshot(JSON.parse(await readFile(file, 'utf8')) as Parameters<typeof summarizeHeapSnapshot>[0]);
      console.log(`\n${component} at rest with ${VPS} entries: RSS ${(rest[component].rss / MIB).toFixed(0)} MiB, heap snapshot ${(total / MIB).toFixed(1)} MiB (${file})\n`);
      printTable(['what', 'MiB', 'count'], groups.slice(0, 15).map((g) => [g.group, (g.bytes / MIB).toFixed(1), String(g.count)]));
    }
  } else {
    log(`[bench] load: the webhook saturated for ${LOAD_SECONDS} s; the sync daemon applies ${VPS} moves`);
    const peaks = { webhook: rest.webhook.rss, sync: rest.sync.rss };
    let ticks = 0;
    const sampler = setInterval(() => {
      ticks++;
      for (const [component, child, port] of [['webhook', webhook.child, webhook.metricsPort], ['sync', sync.child, sync.port]] as const) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        void residentBytes(child.pid ?? 0).then((m) => { peaks[component] = Math.max(peaks[component], m.rss); }).catch(() => undefined);
        if (ticks % 10 === 0) void heapLine(component, child.pid ?? 0, port).then(log).catch(() => undefined);
      }
    }, 1_000);
    const load = (path: string): Promise<autocannon.Result> =>
      autocannon({ url: `https://127.0.0.1:${webhook.port}${path}`, method: 'POST', headers: { 'content-type': 'application/json' }, body: admissionReview('mem', 'CREATE'), connections: 16, duration: LOAD_SECONDS });
    const [validate, mutate] = await Promise.all([load('/validate'), load('/mutate'), publishMany(redis, STREAM, fleetEvents(VPS, 1)).then(() => drained(redis, LOAD_SECONDS * 1000 + 900_000))]);
    clearInterval(sampler);

    const rows: string[][] = [];
    for (const [component, child] of [['webhook', webhook.child], ['sync', sync.child]] as const) {
      const alive = child.exitCode === null && child.signalCode === null;
      const end = alive ? await residentBytes(child.pid ?? 0) : undefined;
      const cgroup = cgroups[component];
      rows.push([
        component,
        `${sizing[component].limit}, ${sizing[component].nodeOptions}`,
        `${(empty[component].rss / MIB).toFixed(0)} MiB`,
        `${(rest[component].rss / MIB).toFixed(0)} MiB`,
        `${(Math.max(peaks[component], end?.peak ?? 0) / MIB).toFixed(0)} MiB`,
        cgroup === undefined ? 'no cgroup' : `${((await cgroup.peakBytes()) / MIB).toFixed(0)} MiB, ${await cgroup.oomKills()} OOM kills`,
        alive ? 'yes' : `no (${child.exitCode ?? child.signalCode ?? '?'})`,
      ]);
    }
    const floors = [
      ['Node alone', await importFloor([])],
      ['Node importing @kubernetes/client-node', await importFloor(['@kubernetes/client-node'])],
      ["Node importing the sync daemon's and the webhook's code", await importFloor([fileURLToPath(new URL('../src/sync/run.ts', import.meta.url)), fileURLToPath(new URL('../src/webhook/run.ts', import.meta.url))])],
    ] as const;
    const answered = validate.requests.total + mutate.requests.total;
    console.log(`\nMemory with ${VPS} VPSs, then under load for ${LOAD_SECONDS} s (${answered} admission requests, ${(answered / LOAD_SECONDS).toFixed(0)}/s, ${validate.errors + mutate.errors} errors; ${VPS} moves applied)\n`);
    printTable(['component', 'chart limit and NODE_OPTIONS', 'RSS serving, no entries', `RSS at rest (${VPS} entries)`, 'peak RSS', "cgroup's peak charge", 'same process at the end'], rows);
    console.log('\nWhat bounds the resident memory: a process that only loads the code and idles\n');
    printTable(['idle process', 'RSS'], floors.map(([what, bytes]) => [what, `${(bytes / MIB).toFixed(0)} MiB`]));
  }
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => { log(`[bench] cleanup: ${String(error)}`); });
  await rm(work, { recursive: true, force: true });
}
