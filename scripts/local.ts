/**
 * `npm run local`: the whole thing on one machine. A real redis-server, a real
 * kube-apiserver (with etcd and kube-controller-manager) with Istio's CRDs, the mesh's
 * namespace and Istio objects, the webhook as its own process, registered from
 * webhook-config/ with freshly generated certificates, and the sync daemon consuming the
 * event stream (a few sample VPSs are registered so entries appear). Writes .local/kubeconfig,
 * .local/env and, when everything is up, .local/ready. Ctrl-C or SIGTERM stops everything
 * it started; a run that was killed is cleaned up by the next one.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureKubeBinaries } from '../test/harness/kube-build.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../test/harness/kube-cluster.ts';
import { spawnSync, spawnWebhook, type SyncProcess, type WebhookProcess } from '../test/harness/processes.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../test/harness/redis-server.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const DIR = resolve(ROOT, process.env.EDGE_REGISTRAR_LOCAL_DIR ?? '.local');
const CLI = join(ROOT, 'src/cli.ts');
const log = (line: string): void => { console.log(line); };

interface Pids {
  pids: number[];
}

/** Processes a killed earlier run left behind (the harness stops itself; redis and node may not). */
async function reapPreviousRun(): Promise<void> {
  let previous: Pids;
  try {
    previous = JSON.parse(await readFile(join(DIR, 'pids.json'), 'utf8')) as Pids;
  } catch {
    return;
  }
  for (const pid of previous.pids) {
    try {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      if (/redis-server|kube-harness|kube-controller-manager|cli\.ts/.test(cmdline)) {
        process.kill(pid, 'SIGKILL');
        log(`[local] stopped pid ${pid} left by an earlier run`);
      }
    } catch {
      // gone already
    }
  }
}

async function main(): Promise<void> {
  await reapPreviousRun();
  await rm(join(DIR, 'ready'), { force: true });
  await rm(join(DIR, 'kube'), { recursive: true, force: true });
  await mkdir(DIR, { recursive: true });

  let redis: RunningRedis | undefined;
  let cluster: StartedCluster | undefined;
  let webhook: WebhookProcess | undefined;
  let sync: SyncProcess | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> =>
    (stopping ??= (async () => {
      log(`[local] ${reason}: stopping everything`);
      await rm(join(DIR, 'ready'), { force: true });
      // The sync daemon first (it writes through the webhook), then the webhook.
      for (const service of [sync, webhook]) {
        if (service === undefined) continue;
        if ((await service.stop(15_000)) === 'killed') log(`[local] pid ${service.child.pid} did not stop in 15s; killed it`);
      }
      await cluster?.stop();
      await redis?.stop();
      await rm(join(DIR, 'pids.json'), { force: true });
      log('[local] stopped');
    })());
  process.once('SIGINT', () => void stop('SIGINT').then(() => process.exit(0)));
  process.once('SIGTERM', () => void stop('SIGTERM').then(() => process.exit(0)));

  try {
    const redisBinary = await ensureRedisServer(log);
    redis = await startRedis({ binary: redisBinary });
    log(`[local] redis-server on ${redis.url}`);

    const binaries = await ensureKubeBinaries(log);
    cluster = await startCluster({ binaries, dir: join(DIR, 'kube'), log });

    webhook = await spawnWebhook(cluster, join(DIR, 'certs'), DIR);
    // --telemetry: the managed Telemetry on a (pretend) ingress gateway in istio-system, so the
    // per-VPS metric tags can be watched following the fleet.
    sync = await spawnSync(cluster, redis.url, DIR, ['--consumer', 'local', '--telemetry']);
    await writeFile(join(DIR, 'pids.json'), JSON.stringify({ pids: [redis.process.pid, cluster.state.pid, webhook.child.pid, sync.child.pid].filter((p) => p !== undefined) }));
    await webhook.ready();
    const { port, metricsPort, certDir } = webhook;
    const syncPort = sync.port;
    log(`[local] webhook serving https://127.0.0.1:${port} (metrics http://127.0.0.1:${metricsPort}/metrics), registered`);

    await copyFile(cluster.state.adminKubeconfig, join(DIR, 'kubeconfig'));
    const env = {
      REDIS_URL: redis.url,
      KUBECONFIG: join(DIR, 'kubeconfig'),
      AIRPORT_NAMESPACE: 'airport-prod',
      AIRPORT_KUBECONFIG: kubeconfigFor(cluster.state, 'sync'),
      EDGE_REGISTRAR_WEBHOOK_URL: `https://127.0.0.1:${port}`,
      EDGE_REGISTRAR_METRICS_URL: `http://127.0.0.1:${metricsPort}/metrics`,
      EDGE_REGISTRAR_SYNC_METRICS_URL: `http://127.0.0.1:${syncPort}/metrics`,
      EDGE_REGISTRAR_CA: join(certDir, 'ca.crt'),
      KUBECTL: binaries.kubectl,
      KUBECONFIG_ALICE: kubeconfigFor(cluster.state, 'alice'),
      KUBECONFIG_BREAK_GLASS: kubeconfigFor(cluster.state, 'breakglass'),
    };
    await writeFile(join(DIR, 'env'), Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');

    // The sync daemon is consuming once it holds the Lease; then replay a small sample so a
    // new user sees entries appear.
    await sync.ready();
    const samples: string[][] = [
      ['--vps-id', 'sample-jp-01', '--name', 'vps-jp-01', '--address', '103.21.244.10', '--country', 'jp'],
      ['--vps-id', 'sample-hk-01', '--name', 'vps-hk-01', '--address', '45.76.10.1', '--country', 'hk'],
      ['--vps-id', 'sample-us-01', '--name', 'vps-us-01', '--address', '2606:4700::1111', '--country', 'us'],
    ];
    for (const sample of samples) {
      const child = spawn(process.execPath, [CLI, 'publish', 'register', '--redis-url', redis.url, ...sample], { stdio: 'ignore' });
      await new Promise((r) => child.once('exit', r));
    }
    for (let i = 0; ; i++) {
      const res = await cluster.kubectl('admin', ['-n', 'airport-prod', 'get', 'workloadentries', '-o', 'name']);
      if (res.stdout.trim().split('\n').filter(Boolean).length >= samples.length) break;
      if (i > 120) throw new Error(`the sample events were not applied; see ${join(DIR, 'sync.log')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    for (let i = 0; ; i++) {
      const res = await cluster.kubectl('admin', ['-n', 'istio-system', 'get', 'telemetry', 'edge-registrar-vps', '-o', "jsonpath={.metadata.annotations['edge-registrar\\.io/vps-count']}"]);
      if (res.code === 0 && Number(res.stdout) >= samples.length) break;
      if (i > 120) throw new Error(`the managed Telemetry did not follow the samples; see ${join(DIR, 'sync.log')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    log(`[local] sync daemon consuming ${redis.url} stream sigma:vps-events (metrics http://127.0.0.1:${syncPort}/metrics); ${samples.length} sample VPSs registered`);
    // What sigma-api hears back, and what a kubectl user sees, for the first sample.
    const outcome = await firstOutcome(redis, 'sample-jp-01');
    log(`[local] outcome of sample-jp-01 on {sigma:vps-events}:outcomes: ${outcome}`);
    const event = await firstEvent(cluster, 'vps-jp-01');
    log(`[local] Event on workloadentry/vps-jp-01: ${event}`);
    await writeFile(join(DIR, 'ready'), `${new Date().toISOString()}\n`);

    const k = `${binaries.kubectl} --kubeconfig ${join(DIR, 'kubeconfig')}`;
    // The machine's own node may be older than the project's (Node 24 comes with npm ci, for
    // npm scripts only): print the CLI through npm, so each command works as printed.
    const cli = 'npm run -s edge-registrar --';
    log(`
edge-registrar local stack is up (state in ${DIR}; ${join(DIR, 'ready')} exists while it is).

  Look:     ${k} -n airport-prod get workloadentries
  Per-VPS:  ${k} -n istio-system get telemetry edge-registrar-vps -o jsonpath='{.spec.metrics[0].overrides[0].tagOverrides.vps.value}'
            (the managed Telemetry's vps tag: a CEL map from each registered VPS's address to its name,
            which the ingress gateway evaluates on every request; it follows every register and retire
            within seconds)
  Env:      set -a; . ${join(DIR, 'env')}; set +a
  Publish an event (what sigma-api does), then look again:
            ${cli} publish register --redis-url ${redis.url} --vps-id v42 --name vps-de-01 --address 45.76.42.1 --country de
            ${cli} publish retire --redis-url ${redis.url} --vps-id v42
            (or: redis-cli -p ${redis.port} XADD sigma:vps-events '*' event register vps_id v43 name vps-sg-01 address 45.76.43.1 country sg)
  Dead letters: ${cli} dlq list --redis-url ${redis.url}
  Outcomes (what sigma-api hears back, one per event):
            redis-cli -p ${redis.port} XRANGE '{sigma:vps-events}:outcomes' - +
            redis-cli -p ${redis.port} XREAD COUNT 10 BLOCK 0 STREAMS '{sigma:vps-events}:outcomes' '$'
  One VPS:  ${cli} status sample-jp-01 --redis-url ${redis.url} --kubeconfig ${join(DIR, 'kubeconfig')} --telemetry
  Events:   ${k} -n airport-prod describe workloadentry vps-jp-01
            ${k} -n airport-prod events --for lease/edge-registrar-sync
  Try a bad entry as a plain user (the webhook refuses it and says why):
            printf 'apiVersion: networking.istio.io/v1\\nkind: WorkloadEntry\\nmetadata: {name: vps-jp-02, namespace: airport-prod, labels: {app: xrayr, country: jp}}\\nspec: {address: 10.0.0.5}\\n' \\
              | ${binaries.kubectl} --kubeconfig ${kubeconfigFor(cluster.state, 'alice')} apply -f -
  Check files offline: ${cli} check my-entries.yaml
  Logs:     ${join(DIR, 'webhook.log')}, ${join(DIR, 'sync.log')}

Ctrl-C stops everything.`);
    await new Promise<void>((resolveExit) => {
      for (const [name, service] of [['webhook', webhook], ['sync', sync]] as const) {
        service?.child.once('exit', (code) => {
          if (stopping !== undefined) return;
          log(`[local] ${name} exited unexpectedly (${code}); see ${join(DIR, `${name}.log`)}`);
          void stop(`${name} exited`).then(() => {
            process.exitCode = 1;
            resolveExit();
          });
        });
      }
    });
  } catch (error) {
    console.error(`[local] ${(error as Error).message}`);
    await stop('start-up failed');
    process.exitCode = 1;
  }
}

/** The first outcome recorded for `vpsId`, as one line (waits for it). */
async function firstOutcome(redis: RunningRedis, vpsId: string): Promise<string> {
  const { Redis } = await import('ioredis');
  const client = new Redis(redis.url, { lazyConnect: true });
  try {
    await client.connect();
    for (let i = 0; i < 120; i++) {
      const rows = (await client.xrange('{sigma:vps-events}:outcomes', '-', '+')) as [string, string[]][];
      for (const [, fields] of rows) {
        const record = Object.fromEntries(fields.flatMap((v, j) => (j % 2 === 0 ? [[v, fields[j + 1] ?? '']] : [])));
        if (record.vps_id === vpsId) return `${record.outcome ?? '?'} (event ${record.source_id ?? '?'}, entry ${record.name ?? '?'})`;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no outcome for ${vpsId}; see ${join(DIR, 'sync.log')}`);
  } finally {
    client.disconnect();
  }
}

/** The first Kubernetes Event about entry `name`, as one line (waits for it). */
async function firstEvent(cluster: StartedCluster, name: string): Promise<string> {
  for (let i = 0; i < 120; i++) {
    // The core API's view of the same Events (its field selector is the one every version has).
    const res = await cluster.kubectl('admin', ['-n', 'airport-prod', 'get', 'events', '--field-selector', `involvedObject.kind=WorkloadEntry,involvedObject.name=${name}`, '-o', 'json']);
    const items = res.code === 0 ? (JSON.parse(res.stdout) as { items: { reason: string; message: string }[] }).items : [];
    if (items[0] !== undefined) return `${items[0].reason}: ${items[0].message}`;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no Event about ${name}; see ${join(DIR, 'sync.log')}`);
}

await main();
