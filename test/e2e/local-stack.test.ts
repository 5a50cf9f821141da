/**
 * The README's main-job command, as a user runs it: `npm run local` comes up, writes what
 * it promises, gates WorkloadEntries, and on SIGTERM stops every process it started. Twice
 * in a row, in one state directory.
 */
import { spawn } from 'node:child_process';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { capture } from '../harness/capture.ts';
import { evaluateCel, mergedValue } from './cel-support.ts';
import { runKubectl } from '../harness/kube-cluster.ts';
import { inject } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const exists = (p: string) => access(p).then(() => true, () => false);
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

let dir: string;
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function runOnce(): Promise<void> {
  const child = spawn(process.execPath, [join(ROOT, 'scripts/local.ts')], { cwd: ROOT, env: { ...process.env, EDGE_REGISTRAR_LOCAL_DIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  const deadline = Date.now() + 150_000;
  while (!(await exists(join(dir, 'ready')))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`local stack did not become ready:\n${output}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(output).toContain('-n airport-prod get workloadentries');
  expect(output).toContain('publish register');
  const env = Object.fromEntries((await readFile(join(dir, 'env'), 'utf8')).trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  expect(env.REDIS_URL).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);

  const kubectl = inject('binaries').kubectl;
  const seeded = await runKubectl(kubectl, join(dir, 'kubeconfig'), ['-n', 'airport-prod', 'get', 'serviceaccount/xrayr-vm', 'workloadgroup/xrayr', 'serviceentry/xrayr-nodes', '-o', 'name']);
  expect(seeded.stdout.trim().split('\n')).toEqual(['serviceaccount/xrayr-vm', 'workloadgroup.networking.istio.io/xrayr', 'serviceentry.networking.istio.io/xrayr-nodes']);
  const bad = await runKubectl(kubectl, join(dir, 'kube/alice.kubeconfig'), ['apply', '-f', '-'], 'apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vps-jp-02, namespace: airport-prod, labels: {app: xrayr, country: jp}}\nspec: {address: 10.0.0.5}\n');
  expect(bad.stderr).toContain('[address.public-unicast]');

  // The printed commands work exactly as printed, in a shell whose `node` is the machine's
  // own (npm scripts put Node 24 first on PATH; a user's shell does not have it).
  const printed = (prefix: string): string => output.split('\n').map((l) => l.trim()).find((l) => l.startsWith(prefix)) ?? `missing: ${prefix}`;
  const shellPath = (process.env.PATH ?? '').split(':').filter((p) => !p.includes('node_modules')).join(':');
  const inShell = (command: string): Promise<{ code: number; stdout: string; stderr: string }> => capture('sh', ['-c', command], { cwd: ROOT, env: { ...process.env, PATH: shellPath } });
  const published = await inShell(printed('npm run -s edge-registrar -- publish register'));
  expect([published.code, published.stdout.trim()]).toEqual([0, expect.stringMatching(/^\d+-\d+$/)]);
  const letters = await inShell(printed('Dead letters:').replace(/^Dead letters:\s*/, ''));
  expect(letters.code).toBe(0);
  // What sigma-api hears back and what a kubectl user sees, for a sample VPS, and the printed commands that show them.
  expect(output).toMatch(/\[local\] outcome of sample-jp-01 on \{sigma:vps-events\}:outcomes: applied \(event \d+-\d+, entry vps-jp-01\)/);
  expect(output).toMatch(/\[local\] Event on workloadentry\/vps-jp-01: Applied: register of VPS sample-jp-01 from stream id \d+-\d+ applied/);
  const outcomes = await inShell(printed("redis-cli -p") );
  expect([outcomes.code, outcomes.stdout]).toEqual([0, expect.stringContaining('sample-jp-01')]);
  const status = await inShell(printed('One VPS:').replace(/^One VPS:\s*/, ''));
  expect([status.code, status.stdout]).toEqual([0, expect.stringMatching(/outcome: +applied \(event \d+-\d+, register/)]);
  const described = await inShell(printed('Events:').replace(/^Events:\s*/, ''));
  expect([described.code, described.stdout]).toEqual([0, expect.stringMatching(/Normal\s+Applied/)]);
  const deadline2 = Date.now() + 20_000;
  let names = '';
  while (!names.includes('vps-de-01') && Date.now() < deadline2) {
    names = (await runKubectl(inject('binaries').kubectl, join(dir, 'kubeconfig'), ['-n', 'airport-prod', 'get', 'workloadentries', '-o', 'name'])).stdout;
    if (!names.includes('vps-de-01')) await new Promise((r) => setTimeout(r, 250));
  }
  expect(names).toContain('vps-de-01');
  const entryAddresses = async (): Promise<Map<string, string>> => {
    const list = JSON.parse((await runKubectl(kubectl, join(dir, 'kubeconfig'), ['-n', 'airport-prod', 'get', 'workloadentries', '-o', 'json'])).stdout) as { items: { metadata: { name: string }; spec: { address: string } }[] };
    return new Map(list.items.map((e) => [e.spec.address, e.metadata.name]));
  };
  // The managed Telemetry follows the fleet: the printed command shows its address-to-name map,
  // with every registered entry's pair (4, then 3 after the retire, the retired one gone).
  const mappedPairs = async (): Promise<string> => {
    const shown = await inShell(printed('Per-VPS:').replace(/^Per-VPS:\s*/, ''));
    if (shown.code !== 0) return `exit ${shown.code}: ${shown.stderr}`;
    // Two forms in the CEL: a map 'address':'name', and a set {'address':0}?'name' where a bucket holds one VPS.
    const pairs = [...shown.stdout.matchAll(/'([0-9a-f.:]+)':'([^']+)'/g)].map((m) => `${m[1] ?? ''}=${m[2] ?? ''}`);
    for (const set of shown.stdout.matchAll(/\{([^{}]*)\}\?'([^']+)'/g)) for (const a of (set[1] ?? '').matchAll(/'([0-9a-f.:]+)':0/g)) pairs.push(`${a[1] ?? ''}=${set[2] ?? ''}`);
    return pairs.sort().join(',');
  };
  const entryPairs = async (): Promise<string> => [...(await entryAddresses())].map(([address, name]) => `${address}=${name}`).sort().join(',');
  const followed = async (count: string): Promise<string> => {
    const until = Date.now() + 15_000;
    const wanted = async (): Promise<string> => ((await entryPairs()).split(',').length === Number(count) ? entryPairs() : 'entries not there yet');
    let [seen, expected] = [await mappedPairs(), await wanted()];
    while (seen !== expected && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      [seen, expected] = [await mappedPairs(), await wanted()];
    }
    return seen === expected ? count : `shown ${seen}, entries ${expected}`;
  };
  expect(await followed('4')).toBe('4');
  // Its expressions, evaluated by cel-go, map every registered entry's address to its name.
  const vpsTagFor = async (addresses: string[]): Promise<string[]> => {
    const telemetry = JSON.parse((await runKubectl(kubectl, join(dir, 'kubeconfig'), ['-n', 'istio-system', 'get', 'telemetry', 'edge-registrar-vps', '-o', 'json'])).stdout) as { spec: { metrics: { overrides: { tagOverrides: Record<string, { value: string }> }[] }[] } };
    const overrides = telemetry.spec.metrics[0]!.overrides[0]!.tagOverrides;
    const shards = Object.keys(overrides).filter((t) => /^vps(_\d+)?$/.test(t));
    const outcome = await evaluateCel(shards.map((t) => overrides[t]!.value), addresses.map((a) => ({ headers: { 'x-envoy-external-address': a } })));
    return addresses.map((_, i) => mergedValue(outcome, i).join(','));
  };
  const before = await entryAddresses();
  expect(before.size).toBe(4);
  expect(await vpsTagFor([...before.keys()])).toEqual([...before.values()]);
  const retired = await inShell(printed('npm run -s edge-registrar -- publish retire'));
  expect(retired.code).toBe(0);
  expect(await followed('3')).toBe('3');
  const after = await entryAddresses();
  const retiredAddresses = [...before.keys()].filter((a) => !after.has(a));
  expect(retiredAddresses.length).toBe(1);
  expect(await vpsTagFor([...after.keys(), ...retiredAddresses])).toEqual([...after.values(), 'unregistered']);

  const { pids } = JSON.parse(await readFile(join(dir, 'pids.json'), 'utf8')) as { pids: number[] };
  expect(pids.length).toBe(4);
  const sampled = await runKubectl(kubectl, join(dir, 'kubeconfig'), ['-n', 'airport-prod', 'get', 'workloadentries', '-o', 'name']);
  expect(sampled.stdout.trim().split('\n')).toEqual(expect.arrayContaining(['workloadentry.networking.istio.io/vps-hk-01', 'workloadentry.networking.istio.io/vps-jp-01', 'workloadentry.networking.istio.io/vps-us-01']));
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  const gone = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
  const survivors = await Promise.all(pids.filter(alive).map((pid) => readFile(`/proc/${pid}/cmdline`, 'utf8').then((c) => `${pid}: ${c.replaceAll('\0', ' ')}`, () => `${pid}: (gone)`)));
  expect(survivors, output).toEqual([]);
  expect(await exists(join(dir, 'ready'))).toBe(false);
}

describe('npm run local', () => {
  it('starts, gates entries, and stops everything it started; twice in a row', async () => {
    dir = await mkdtemp(join(tmpdir(), 'edge-registrar-local-'));
    await runOnce();
    await runOnce();
  }, 400_000);
});
