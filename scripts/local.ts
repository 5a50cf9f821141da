/**
 * `npm run local`: the whole thing on one machine. A real redis-server, a real
 * kube-apiserver (with etcd and kube-controller-manager) with Istio's CRDs, the seed's
 * namespace and Istio objects, the webhook as its own process, registered from
 * webhook-config/ with freshly generated certificates, and the sync daemon consuming the
 * event stream (a few sample VPSs are registered so entries appear). Writes .local/kubeconfig,
 * .local/env and, when everything is up, .local/ready. Ctrl-C or SIGTERM stops everything
 * it started; a run that was killed is cleaned up by the next one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, createServingCertificate } from '../src/certs/authority.ts';
import { writeCertificateFiles } from '../src/certs/files.ts';
import { ensureKubeBinaries } from '../test/harness/kube-build.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../test/harness/kube-cluster.ts';
import { ensureRedisServer, freePort, startRedis, type RunningRedis } from '../test/harness/redis-server.ts';
import { httpsRequest } from '../test/harness/https-client.ts';
import { localWebhookManifests } from '../test/harness/webhook-registration.ts';

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

function startCli(command: 'webhook' | 'sync', args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logFile = createWriteStream(join(DIR, `${command}.log`));
  child.stdout.pipe(logFile, { end: false });
  child.stderr.pipe(logFile, { end: false });
  child.once('exit', () => logFile.end());
  return child;
}

async function waitReady(port: number, ca: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the webhook exited with ${child.exitCode}; see ${join(DIR, 'webhook.log')}`);
    const status = await httpsRequest(port, { path: '/readyz', ca }).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('the webhook did not become ready in 60s');
}

async function main(): Promise<void> {
  await reapPreviousRun();
  await rm(join(DIR, 'ready'), { force: true });
  await rm(join(DIR, 'kube'), { recursive: true, force: true });
  await mkdir(DIR, { recursive: true });

  let redis: RunningRedis | undefined;
  let cluster: StartedCluster | undefined;
  let webhook: ChildProcess | undefined;
  let sync: ChildProcess | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> =>
    (stopping ??= (async () => {
      log(`[local] ${reason}: stopping everything`);
      await rm(join(DIR, 'ready'), { force: true });
      // The sync daemon first (it writes through the webhook), then the webhook.
      for (const child of [sync, webhook]) {
        if (child === undefined || child.exitCode !== null || child.signalCode !== null) continue;
        const exited = new Promise<boolean>((r) => child.once('exit', () => { r(true); }));
        child.kill('SIGTERM');
        const clean = await Promise.race([exited, new Promise<boolean>((r) => setTimeout(() => { r(false); }, 15_000))]);
        if (!clean) {
          log(`[local] pid ${child.pid} did not stop in 15s; killing it`);
          child.kill('SIGKILL');
          await exited;
        }
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

    const certDir = join(DIR, 'certs');
    const ca = createCertificateAuthority('edge-registrar-local-ca', 30);
    await writeCertificateFiles(certDir, ca, createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 }), true);

    const port = await freePort();
    const metricsPort = await freePort();
    webhook = startCli('webhook', [
      '--host', '127.0.0.1',
      '--port', String(port),
      '--metrics-port', String(metricsPort),
      '--tls-cert', join(certDir, 'tls.crt'),
      '--tls-key', join(certDir, 'tls.key'),
      '--kubeconfig', kubeconfigFor(cluster.state, 'webhook'),
      // No load balancer to drain from locally.
      '--shutdown-delay', '0',
    ]);
    const syncPort = await freePort();
    sync = startCli('sync', [
      '--kubeconfig', kubeconfigFor(cluster.state, 'sync'),
      '--redis-url', redis.url,
      '--port', String(syncPort),
      '--consumer', 'local',
    ]);
    await writeFile(join(DIR, 'pids.json'), JSON.stringify({ pids: [redis.process.pid, cluster.state.pid, webhook.pid, sync.pid].filter((p) => p !== undefined) }));
    await waitReady(port, ca.cert, webhook);
    const registered = await cluster.kubectl('admin', ['apply', '-f', '-'], await localWebhookManifests(port, ca.cert));
    if (registered.code !== 0) throw new Error(`registering the webhook failed: ${registered.stderr}`);
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

    // Until the webhook has waited for the API server to pick up its registration, a write
    // could slip past it: prove the gate is closed before saying ready.
    const probe = `apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vps-jp-99, namespace: airport-prod}\nspec: {address: 10.9.9.9}\n`;
    for (let i = 0; ; i++) {
      const res = await cluster.kubectl('admin', ['apply', '--dry-run=server', '-f', '-'], probe);
      if (res.stderr.includes('address.public-unicast')) break;
      if (i > 120) throw new Error('the API server did not start calling the webhook');
      await new Promise((r) => setTimeout(r, 250));
    }
    // The sync daemon is consuming once it holds the Lease; then replay a small sample so a
    // new user sees entries appear.
    for (let i = 0; ; i++) {
      const metrics = await fetch(`http://127.0.0.1:${syncPort}/metrics`).then((r) => r.text()).catch(() => '');
      if (/^edge_registrar_sync_leader 1$/m.test(metrics)) break;
      if (sync.exitCode !== null || i > 240) throw new Error(`the sync daemon did not start consuming; see ${join(DIR, 'sync.log')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
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
    log(`[local] sync daemon consuming ${redis.url} stream sigma:vps-events (metrics http://127.0.0.1:${syncPort}/metrics); ${samples.length} sample VPSs registered`);
    await writeFile(join(DIR, 'ready'), `${new Date().toISOString()}\n`);

    const k = `${binaries.kubectl} --kubeconfig ${join(DIR, 'kubeconfig')}`;
    log(`
edge-registrar local stack is up (state in ${DIR}; ${join(DIR, 'ready')} exists while it is).

  Look:     ${k} -n airport-prod get workloadentries
  Env:      set -a; . ${join(DIR, 'env')}; set +a
  Publish an event (what sigma-api does), then look again:
            node src/cli.ts publish register --redis-url ${redis.url} --vps-id v42 --name vps-de-01 --address 45.76.42.1 --country de
            node src/cli.ts publish retire --redis-url ${redis.url} --vps-id v42
            (or: redis-cli -p ${redis.port} XADD sigma:vps-events '*' event register vps_id v43 name vps-sg-01 address 45.76.43.1 country sg)
  Dead letters: node src/cli.ts dlq list --redis-url ${redis.url}
  Try a bad entry as a plain user (the webhook refuses it and says why):
            printf 'apiVersion: networking.istio.io/v1\\nkind: WorkloadEntry\\nmetadata: {name: vps-jp-02, namespace: airport-prod, labels: {app: xrayr, country: jp}}\\nspec: {address: 10.0.0.5}\\n' \\
              | ${binaries.kubectl} --kubeconfig ${kubeconfigFor(cluster.state, 'alice')} apply -f -
  Check files offline: node src/cli.ts check my-entries.yaml
  Logs:     ${join(DIR, 'webhook.log')}, ${join(DIR, 'sync.log')}

Ctrl-C stops everything.`);
    await new Promise<void>((resolveExit) => {
      for (const [name, child] of [['webhook', webhook], ['sync', sync]] as const) {
        child?.once('exit', (code) => {
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

await main();
