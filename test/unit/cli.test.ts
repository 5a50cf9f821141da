/** The CLI as a user runs it: a child process, its output lines and its exit code. */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/flags.ts';
import { syncConfig } from '../../src/config/sync.ts';
import { webhookConfig } from '../../src/config/webhook.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
let dir: string;

function run(args: string[], input?: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, AIRPORT_KUBECONFIG: '', ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    // A CLI that refuses its arguments exits before reading stdin; the EPIPE is not the result.
    child.stdin?.on('error', () => undefined);
    if (input !== undefined) child.stdin?.end(input);
  });
}

const GOOD = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vps-jp-01
  namespace: airport-prod
  labels: {app: xrayr, country: jp}
spec:
  address: 103.21.244.10
  labels: {app: xrayr, version: v1, country: jp}
  serviceAccount: xrayr-vm
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('edge-registrar check', () => {
  it('passes a good entry: exit 0, nothing on stdout, cluster rules reported as skipped', async () => {
    const file = join(dir, 'good.yaml');
    await writeFile(file, GOOD);
    const res = await run(['check', file]);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('skipped: labels.service-selected');
    expect(res.stderr).toContain('checked 1 WorkloadEntry in 1 file(s): 0 violation(s)');
  });

  it('prints FILE: KIND/NAME: RULE: message per violation, with uniqueness across files, exit 1', async () => {
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.json');
    await writeFile(a, `${GOOD}---\n${GOOD.replace('vps-jp-01', 'vps-jp-02').replace('103.21.244.10', '10.0.0.5')}---\n`);
    await writeFile(
      b,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [{ apiVersion: 'networking.istio.io/v1beta1', kind: 'WorkloadEntry', metadata: { name: 'vps-jp-03', labels: { app: 'xrayr', country: 'jp' } }, spec: { address: '::ffff:103.21.244.10' } }],
      }),
    );
    const res = await run(['check', a, b]);
    expect(res.code).toBe(1);
    const lines = res.stdout.trim().split('\n');
    expect(lines).toContain(`${a}: WorkloadEntry/vps-jp-02: address.public-unicast: spec.address: "10.0.0.5" is in the private (RFC 1918) range 10.0.0.0/8; expected a public unicast IPv4 or IPv6 address, e.g. 103.21.244.10`);
    expect(lines).toContain(`${a}: WorkloadEntry/vps-jp-01: address.unique: spec.address: "103.21.244.10" is already used by WorkloadEntry airport-prod/vps-jp-03; expected an address no other entry in the namespace has`);
    expect(lines.some((l) => l.startsWith(`${b}: WorkloadEntry/vps-jp-03: address.unique:`))).toBe(true);
    expect(res.stderr).toContain('warning:');
  });

  it('reads standard input with "-" and prints JSON with --output json', async () => {
    const res = await run(['check', '--output', 'json', '-'], GOOD.replace('xrayr-vm', 'default'));
    expect(res.code).toBe(1);
    const report = JSON.parse(res.stdout) as { violations: { rule: string; file: string }[] };
    expect(report.violations).toEqual([expect.objectContaining({ rule: 'serviceAccount.value', file: '(stdin)' })]);
  });

  it('exit 2 on parse errors, naming the file and document', async () => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, `${GOOD}---\nmetadata: [unclosed\n`);
    const res = await run(['check', file]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${file}: document 2:`);
  });

  it('exit 2 on usage errors and missing files', async () => {
    expect((await run(['check'])).code).toBe(2);
    expect((await run(['check', join(dir, 'missing.yaml')])).code).toBe(2);
    expect((await run(['check', '--output', 'xml', join(dir, 'good.yaml')])).code).toBe(2);
    expect((await run(['no-such-command'])).code).toBe(2);
  });

  it('exit 2 on a bad policy file, naming field and value', async () => {
    const policy = join(dir, 'policy.yaml');
    await writeFile(policy, 'address:\n  denyCidrs: [nope]\n');
    const res = await run(['check', '--policy', policy, join(dir, 'good.yaml')]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('address.denyCidrs[0]: must be a CIDR');
    expect(res.stderr).toContain('got "nope"');
  });
});

describe('edge-registrar policy print', () => {
  it('prints the file named by EDGE_REGISTRAR_POLICY, --policy over it, and the defaults when it is empty', async () => {
    const fromEnv = join(dir, 'policy-env.yaml');
    const fromFlag = join(dir, 'policy-flag.yaml');
    await writeFile(fromEnv, 'address:\n  denyCidrs: [198.18.0.0/15]\n');
    await writeFile(fromFlag, 'address:\n  denyCidrs: [192.0.2.0/24]\n');
    const env = await run(['policy', 'print'], undefined, { EDGE_REGISTRAR_POLICY: fromEnv });
    expect(env.code).toBe(0);
    expect(env.stdout).toContain('198.18.0.0/15');
    const flag = await run(['policy', 'print', '--policy', fromFlag], undefined, { EDGE_REGISTRAR_POLICY: fromEnv });
    expect(flag.stdout).toContain('192.0.2.0/24');
    expect(flag.stdout).not.toContain('198.18.0.0/15');
    // An empty variable is an unset one, as everywhere in the configuration (a chart's "").
    const empty = await run(['policy', 'print'], undefined, { EDGE_REGISTRAR_POLICY: '' });
    const defaults = await run(['policy', 'print'], undefined, { EDGE_REGISTRAR_POLICY: undefined });
    expect(empty.code).toBe(0);
    expect(empty.stdout).toBe(defaults.stdout);
    expect(empty.stdout).not.toContain('198.18.0.0/15');
  });
});

describe('edge-registrar certs generate', () => {
  it('writes a CA and a serving certificate with the SANs asked for', async () => {
    const out = join(dir, 'certs');
    const res = await run(['certs', 'generate', '--out', out, '--host', 'edge-registrar-webhook.airport-prod.svc', '--host', 'localhost', '--ip', '127.0.0.1']);
    expect(res.code).toBe(0);
    const cert = new X509Certificate(await readFile(join(out, 'tls.crt')));
    const ca = new X509Certificate(await readFile(join(out, 'ca.crt')));
    expect(cert.subjectAltName).toBe('DNS:edge-registrar-webhook.airport-prod.svc, DNS:localhost, IP Address:127.0.0.1');
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(ca.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);
    expect((await stat(join(out, 'tls.key'))).mode & 0o777).toBe(0o600);
  });

  it('refuses to overwrite without --force, and rejects a bad --ip', async () => {
    const out = join(dir, 'certs');
    expect((await run(['certs', 'generate', '--out', out, '--host', 'x'])).stderr).toContain('pass --force');
    expect((await run(['certs', 'generate', '--out', join(dir, 'c2'), '--host', 'x', '--ip', 'nope'])).stderr).toContain('"nope" is not an IP address');
    expect((await run(['certs', 'generate', '--out', join(dir, 'c3')])).code).toBe(2);
  });
});

describe('edge-registrar dlq', () => {
  it.each([['replay'], ['replay', '1-0', '--all'], ['purge'], ['purge', '1-0', '--all']])('%s %s %s: exactly one of ID and --all, else exit 2', async (...args) => {
    const res = await run(['dlq', ...args.filter(Boolean), '--redis-url', 'redis://127.0.0.1:1']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('give one ID or --all');
  });
});

describe('edge-registrar backfill', () => {
  it('--from a URL that never answers gives up after --timeout, naming the URL without its credentials (sent as Basic auth)', async () => {
    // A server that accepts and never answers; it records the Authorization header it got.
    const seen: (string | undefined)[] = [];
    const hanging = createServer((req) => { seen.push(req.headers.authorization); });
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const { port } = hanging.address() as AddressInfo;
    try {
      const result = await run(['backfill', '--from', `http://ops:s3cret@127.0.0.1:${port}/vps.json`, '--timeout', '1', '--redis-url', 'redis://127.0.0.1:1']);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`--from http://ops:[redacted]@127.0.0.1:${port}/vps.json: no complete answer within 1 s (--timeout)`);
      expect(result.stderr).not.toContain('s3cret');
      expect(seen).toEqual([`Basic ${Buffer.from('ops:s3cret').toString('base64')}`]);
    } finally {
      hanging.closeAllConnections();
      hanging.close();
    }
  });
});

describe('configuration', () => {
  it('defaults fit the seeds', () => {
    const config = webhookConfig({}, {});
    expect(config).toMatchObject({ namespace: 'airport-prod', port: 8443, istioApiVersion: 'v1', keepAliveTimeoutMs: 120_000 });
    expect(config.kubeconfig).toBeUndefined(); // in-cluster credentials
  });

  it('flags win over the environment; --kubeconfig over AIRPORT_KUBECONFIG', () => {
    const env = { AIRPORT_NAMESPACE: 'from-env', AIRPORT_KUBECONFIG: '/env/kubeconfig' };
    expect(webhookConfig({}, env)).toMatchObject({ namespace: 'from-env', kubeconfig: '/env/kubeconfig' });
    expect(webhookConfig({ namespace: 'from-flag', kubeconfig: '/flag/kubeconfig' }, env)).toMatchObject({ namespace: 'from-flag', kubeconfig: '/flag/kubeconfig' });
  });

  it('errors name the flag or variable, the value and the rule', () => {
    expect(() => webhookConfig({ port: '99999' }, {})).toThrow(ConfigError);
    expect(() => webhookConfig({ port: '99999' }, {})).toThrow(/--port \/ EDGE_REGISTRAR_WEBHOOK_PORT.*got "99999"/);
    expect(() => webhookConfig({}, { AIRPORT_NAMESPACE: 'Airport_Prod' })).toThrow(/--namespace \/ AIRPORT_NAMESPACE: must be a DNS label.*got "Airport_Prod"/);
  });

  it('self-managed certificate: settings from flags or the environment (POD_NAMESPACE as the fallback), errors named by their own flags', () => {
    const env = { EDGE_REGISTRAR_CERT_MODE: 'self', EDGE_REGISTRAR_CERT_SECRET: 'hook-tls', POD_NAMESPACE: 'edge-registrar', EDGE_REGISTRAR_WEBHOOK_SERVICE: 'hook', EDGE_REGISTRAR_CERT_CHECK_INTERVAL_SECONDS: '5' };
    expect(webhookConfig({}, env)).toMatchObject({
      certificateMode: 'self',
      selfCertificate: { secretName: 'hook-tls', secretNamespace: 'edge-registrar', service: 'hook', days: 365, renewBeforeDays: 30, checkIntervalMs: 5000 },
    });
    expect(webhookConfig({}, {}).selfCertificate).toBeUndefined();
    expect(() => webhookConfig({ certMode: 'self', certSecret: 'x' }, {})).toThrow(/--cert-secret-namespace \/ EDGE_REGISTRAR_CERT_SECRET_NAMESPACE \(or POD_NAMESPACE\): .*\(missing\).*--service \/ EDGE_REGISTRAR_WEBHOOK_SERVICE: .*\(missing\)/);
    expect(() => webhookConfig({ certDays: '10', certRenewBefore: '20' }, env)).toThrow(/--cert-renew-before \/ EDGE_REGISTRAR_CERT_RENEW_BEFORE_DAYS: renew-before must be shorter than the certificate validity \(got "20"\)/);
    expect(() => webhookConfig({ service: 'Bad_' }, env)).toThrow(/--service \/ EDGE_REGISTRAR_WEBHOOK_SERVICE: must be a DNS label.*got "Bad_"/);
  });

  it('sync --concurrency / EDGE_REGISTRAR_SYNC_CONCURRENCY', () => {
    expect(syncConfig({}, {}, 'c').concurrency).toBe(16);
    expect(syncConfig({}, { EDGE_REGISTRAR_SYNC_CONCURRENCY: '32' }, 'c').concurrency).toBe(32);
    expect(syncConfig({ concurrency: '8' }, { EDGE_REGISTRAR_SYNC_CONCURRENCY: '32' }, 'c').concurrency).toBe(8);
    expect(() => syncConfig({ concurrency: '0' }, {}, 'c')).toThrow(/--concurrency \/ EDGE_REGISTRAR_SYNC_CONCURRENCY: .*got "0"/);
  });

  it('Redis Cluster: --redis-cluster-nodes / REDIS_CLUSTER_NODES, not with Sentinel, outcomes in the stream\'s slot', () => {
    expect(syncConfig({}, { REDIS_CLUSTER_NODES: 'r0:6379, r1:6380' }, 'c').redis.clusterNodes).toEqual([{ host: 'r0', port: 6379 }, { host: 'r1', port: 6380 }]);
    expect(syncConfig({ redisClusterNodes: 'r2:7000' }, { REDIS_CLUSTER_NODES: 'r0:6379' }, 'c').redis.clusterNodes).toEqual([{ host: 'r2', port: 7000 }]);
    expect(syncConfig({}, {}, 'c').redis.clusterNodes).toBeUndefined();
    expect(() => syncConfig({}, { REDIS_CLUSTER_NODES: 'r0' }, 'c')).toThrow(/--redis-cluster-nodes \/ REDIS_CLUSTER_NODES/);
    expect(() => syncConfig({}, { REDIS_CLUSTER_NODES: 'r0:6379', REDIS_SENTINELS: 's:26379' }, 'c')).toThrow(/REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both/);
    expect(() => syncConfig({ outcomeStream: 'outcomes' }, { REDIS_CLUSTER_NODES: 'r0:6379' }, 'c')).toThrow(/outcome stream must be in the stream's hash slot/);
    expect(syncConfig({ outcomeStream: '{sigma:vps-events}:heard' }, { REDIS_CLUSTER_NODES: 'r0:6379' }, 'c').outcomeStream).toBe('{sigma:vps-events}:heard');
    // One server: any name will do.
    expect(syncConfig({ outcomeStream: 'outcomes' }, {}, 'c').outcomeStream).toBe('outcomes');
  });
});
