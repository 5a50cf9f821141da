/**
 * `npm run local`: the whole thing on one machine. A real redis-server, a real
 * kube-apiserver (with etcd and kube-controller-manager) with Istio's CRDs, the seed's
 * namespace and Istio objects, and the webhook as its own process, registered from
 * webhook-config/ with freshly generated certificates. Writes .local/kubeconfig,
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

function startWebhook(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, 'webhook', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logFile = createWriteStream(join(DIR, 'webhook.log'));
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
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> =>
    (stopping ??= (async () => {
      log(`[local] ${reason}: stopping everything`);
      await rm(join(DIR, 'ready'), { force: true });
      const hook = webhook;
      if (hook && hook.exitCode === null) {
        const exited = new Promise<boolean>((r) => hook.once('exit', () => { r(true); }));
        hook.kill('SIGTERM');
        const clean = await Promise.race([exited, new Promise<boolean>((r) => setTimeout(() => { r(false); }, 15_000))]);
        if (!clean) hook.kill('SIGKILL');
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
    webhook = startWebhook([
      '--host', '127.0.0.1',
      '--port', String(port),
      '--metrics-port', String(metricsPort),
      '--tls-cert', join(certDir, 'tls.crt'),
      '--tls-key', join(certDir, 'tls.key'),
      '--kubeconfig', kubeconfigFor(cluster.state, 'webhook'),
      // No load balancer to drain from locally.
      '--shutdown-delay', '0',
    ]);
    await writeFile(join(DIR, 'pids.json'), JSON.stringify({ pids: [redis.process.pid, cluster.state.pid, webhook.pid].filter((p) => p !== undefined) }));
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
    await writeFile(join(DIR, 'ready'), `${new Date().toISOString()}\n`);

    const k = `${binaries.kubectl} --kubeconfig ${join(DIR, 'kubeconfig')}`;
    log(`
edge-registrar local stack is up (state in ${DIR}; ${join(DIR, 'ready')} exists while it is).

  Look:     ${k} -n airport-prod get workloadentries
  Env:      set -a; . ${join(DIR, 'env')}; set +a
  Try a bad entry as a plain user (the webhook refuses it and says why):
            printf 'apiVersion: networking.istio.io/v1\\nkind: WorkloadEntry\\nmetadata: {name: vps-jp-01, namespace: airport-prod, labels: {app: xrayr, country: jp}}\\nspec: {address: 10.0.0.5}\\n' \\
              | ${binaries.kubectl} --kubeconfig ${kubeconfigFor(cluster.state, 'alice')} apply -f -
  Check files offline: node src/cli.ts check my-entries.yaml
  Webhook logs: ${join(DIR, 'webhook.log')}

Ctrl-C stops everything.`);
    await new Promise<void>((resolveExit) => {
      webhook?.once('exit', (code) => {
        if (stopping === undefined) {
          log(`[local] the webhook exited unexpectedly (${code}); see ${join(DIR, 'webhook.log')}`);
          void stop('webhook exited').then(() => {
            process.exitCode = 1;
            resolveExit();
          });
        }
      });
    });
  } catch (error) {
    console.error(`[local] ${(error as Error).message}`);
    await stop('start-up failed');
    process.exitCode = 1;
  }
}

await main();
