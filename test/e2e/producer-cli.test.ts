/**
 * sigma-api's side through the CLI, against the real stack (redis-server, the API server with
 * Istio's CRDs, the registered webhook, the sync daemon): `publish` refuses what the daemon
 * would dead-letter for its content, `publish --wait` waits for the event's own outcome (on the
 * outcome stream it is told), an event sent twice does what the contract says, a dead-lettered
 * outcome leads to its dead letter by either id, and `status` says what is true of a VPS whose
 * only event was dead-lettered and of per-VPS metrics it was not told about.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { daemonKeys } from '../../src/redis/keys.ts';
import { fieldsToRecord } from '../../src/sync/event.ts';
import { outcomeRecordSchema, type OutcomeRecord } from '../../src/sync/outcome.ts';
import { capture } from '../harness/capture.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { STREAM, settled, testSyncConfig, useSyncTestBed, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, kubectl, waitFor } from './support.ts';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const KEYS = daemonKeys(STREAM, NAMESPACE);
let bed: SyncTestBed;
const startSync = useSyncTestBed('producer-cli', (started) => {
  bed = started;
});

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return capture(process.execPath, [CLI, ...args]);
}

const redisFlags = (): string[] => ['--redis-url', bed.redisServer.url];

async function outcomesOn(stream: string): Promise<OutcomeRecord[]> {
  const rows = (await bed.redis.xrange(stream, '-', '+')) as [string, string[]][];
  return rows.map(([, fields]) => outcomeRecordSchema.parse(fieldsToRecord(fields)));
}

async function entry(name: string): Promise<{ address?: string; streamId?: string } | undefined> {
  const res = await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name, '-o', 'json']);
  if (res.code !== 0) return undefined;
  const parsed = JSON.parse(res.stdout) as { spec: { address: string }; metadata: { annotations: Record<string, string> } };
  return { address: parsed.spec.address, streamId: parsed.metadata.annotations['edge-registrar.io/stream-id'] };
}

describe('publish checks what the daemon would dead-letter', () => {
  it.each([
    ['a private address', ['--address', '10.0.0.5', '--country', 'jp'], /\(address.public-unicast\):\n {2}\[address.public-unicast\] spec.address: "10.0.0.5" is in the private \(RFC 1918\) range 10.0.0.0\/8/],
    ['a country that is no ISO code', ['--address', '103.21.244.20', '--country', 'uk'], /\(labels.country\):\n {2}\[labels.country\] .*"uk"/],
  ])('refuses %s with its rule and reason, publishes nothing and exits 2; --no-check publishes it', async (_what, flags, reason) => {
    const refused = await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v20', '--name', 'vps-jp-20', ...flags);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(reason);
    expect(await bed.redis.xlen(STREAM)).toBe(0);
    const unchecked = await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v20', '--name', 'vps-jp-20', ...flags, '--no-check');
    expect([unchecked.code, unchecked.stdout.trim()]).toEqual([0, expect.stringMatching(/^\d+-\d+$/)]);
    expect(await bed.redis.xlen(STREAM)).toBe(1);
  });

  it('checks with the policy it is given (--policy), as the daemon would with the same file', async () => {
    const refused = await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v21', '--name', 'vps-jp-21', '--address', '103.21.244.21', '--country', 'jp', '--policy', fileURLToPath(new URL('../fixtures/policy-deny-103.yaml', import.meta.url)));
    expect([refused.code, refused.stderr]).toEqual([2, expect.stringContaining('[address.denied-cidrs] spec.address: "103.21.244.21" is inside the denied CIDR 103.21.244.0/24')]);
  });

  it('backfill --dry-run refuses the rows the daemon would dead-letter, naming each', async () => {
    const file = fileURLToPath(new URL('../fixtures/backfill-bad-rows.csv', import.meta.url));
    const dry = await cli('backfill', ...redisFlags(), '--from', file, '--dry-run');
    expect(dry.code).toBe(2);
    expect(dry.stderr).toMatch(/line 2: \[address.public-unicast\] spec.address: "10.0.0.5"/);
    expect(dry.stderr).toMatch(/line 3: \[labels.country\] .*"uk"/);
    expect(dry.stderr).toContain('2 invalid row(s); nothing published');
    expect(await bed.redis.xlen(STREAM)).toBe(0);
  });
});

describe('publish --wait', () => {
  it("prints the event's own outcome and exits 0 for applied, deleted and unchanged", async () => {
    await startSync();
    const applied = await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v30', '--name', 'vps-jp-30', '--address', '103.21.244.30', '--country', 'jp', '--wait');
    expect(applied.code, applied.stderr).toBe(0);
    const [id, outcome] = applied.stdout.trim().split('\n');
    expect(id).toMatch(/^\d+-\d+$/);
    expect(outcome).toBe('applied: entry vps-jp-30');
    expect((await entry('vps-jp-30'))?.streamId).toBe(id);
    const deleted = await cli('publish', 'retire', ...redisFlags(), '--vps-id', 'v30', '--wait');
    expect([deleted.code, deleted.stdout.trim().split('\n')[1]]).toEqual([0, 'deleted: entry vps-jp-30']);
    const unchanged = await cli('publish', 'retire', ...redisFlags(), '--vps-id', 'v31', '--wait');
    expect([unchanged.code, unchanged.stdout.trim().split('\n')[1]]).toEqual([0, 'unchanged: no entry of VPS v31 to remove']);
  });

  it('exits 3 for a dead letter (a claim the daemon alone can judge), naming its rule and the letter', async () => {
    await startSync();
    expect((await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v32', '--name', 'vps-jp-32', '--address', '103.21.244.32', '--country', 'jp', '--wait')).code).toBe(0);
    const taken = await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v33', '--name', 'vps-jp-33', '--address', '103.21.244.32', '--country', 'jp', '--wait');
    expect(taken.code, taken.stderr).toBe(3);
    const [, outcome, letter] = taken.stdout.trim().split('\n');
    expect(outcome).toBe('dead-lettered: entry vps-jp-33 [address.unique] address: "103.21.244.32" is registered to VPS v32; expected an address no other VPS holds at this point in the stream (retire VPS v32, or move it to another address, before this event)');
    expect(letter).toMatch(new RegExp(`^dead letter (\\d+-\\d+): edge-registrar dlq show \\1 --redis-url ${bed.redisServer.url.replace(/[.]/g, '\\.')}$`));
  });

  it('exits 6 when no outcome comes in time, saying why', async () => {
    const waited = await cli('publish', 'retire', ...redisFlags(), '--vps-id', 'v34', '--wait', '--wait-timeout', '1');
    expect(waited.code).toBe(6);
    expect(waited.stderr).toMatch(/no outcome for \d+-\d+ on \{sigma:vps-events\}:outcomes within 1 s \(--wait-timeout\)/);
  });

  it('reads the outcome stream it is told (--outcome-stream), as the daemon writes it', async () => {
    await startSync({ outcomeStream: '{sigma:vps-events}:heard' });
    const heard = await cli('publish', 'retire', ...redisFlags(), '--vps-id', 'v35', '--wait', '--wait-timeout', '20', '--outcome-stream', '{sigma:vps-events}:heard');
    expect([heard.code, heard.stdout.trim().split('\n')[1]]).toEqual([0, 'unchanged: no entry of VPS v35 to remove']);
    expect(await bed.redis.xlen(KEYS.outcomes)).toBe(0);
  });
});

describe('an event sent twice, as the contract says', () => {
  it('a register sent again is applied again (same entry, the new stream id); a retire sent again is unchanged', async () => {
    await startSync();
    const register = ['publish', 'register', ...redisFlags(), '--vps-id', 'v40', '--name', 'vps-jp-40', '--address', '103.21.244.40', '--country', 'jp', '--wait'];
    const first = await cli(...register);
    const again = await cli(...register);
    const [firstId, againId] = [first.stdout.split('\n')[0], again.stdout.split('\n')[0]];
    expect([first.code, again.code]).toEqual([0, 0]);
    const byId = new Map((await outcomesOn(KEYS.outcomes)).map((o) => [o.source_id, o.outcome]));
    expect([byId.get(firstId ?? ''), byId.get(againId ?? '')]).toEqual(['applied', 'applied']);
    expect(await entry('vps-jp-40')).toEqual({ address: '103.21.244.40', streamId: againId });
    const retire = ['publish', 'retire', ...redisFlags(), '--vps-id', 'v40', '--wait'];
    expect((await cli(...retire)).stdout.split('\n')[1]).toBe('deleted: entry vps-jp-40');
    expect((await cli(...retire)).stdout.split('\n')[1]).toBe('unchanged: no entry of VPS v40 to remove');
  });
});

describe('from a dead-lettered outcome to its dead letter', () => {
  it('the outcome carries the letter\'s id, and dlq show and dlq replay take either id', async () => {
    await startSync();
    // No country: the contract refuses it (published around the CLI's own check, as a raw producer would).
    const source = String(await bed.redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v50', 'name', 'vps-jp-50', 'address', '103.21.244.50'));
    await settled(bed.redis);
    const [outcome] = await outcomesOn(KEYS.outcomes);
    const [[letterId] = ['']] = (await bed.redis.xrange(KEYS.deadLetters, '-', '+')) as [string, string[]][];
    expect(outcome).toMatchObject({ source_id: source, outcome: 'dead-lettered', rule: 'event.schema', dlq_id: letterId, reason: "[event.schema] country: is missing; expected an ISO 3166-1 alpha-2 code in lower case, e.g. jp" });
    for (const id of [letterId, source]) {
      const shown = await cli('dlq', 'show', id, ...redisFlags());
      expect(shown.code, shown.stderr).toBe(0);
      expect(JSON.parse(shown.stdout)).toMatchObject({ id: letterId, dlq_source_id: source, dlq_rule: 'event.schema' });
    }
    const unknown = await cli('dlq', 'show', '1-1', ...redisFlags());
    expect([unknown.code, unknown.stderr]).toEqual([1, expect.stringContaining("no dead letter in {sigma:vps-events}:dlq has the id 1-1, and none was made from an event with that id (an outcome's source_id or dlq_id both work)")]);
    const replayed = await cli('dlq', 'replay', source, ...redisFlags());
    expect([replayed.code, replayed.stdout]).toEqual([0, expect.stringMatching(new RegExp(`^${letterId} -> \\d+-\\d+\\n$`))]);
    // The letter is gone; the replayed event (still without a country) is a new event with a letter of its own.
    expect(await bed.redis.xrange(KEYS.deadLetters, letterId, letterId)).toEqual([]);
  });
});

describe('status says what is true', () => {
  it('a VPS whose only event was dead-lettered: its outcome, the rule once, the letter, exit 1', async () => {
    await startSync();
    await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v60', '--name', 'vps-jp-60', '--address', '10.0.0.60', '--country', 'jp', '--no-check');
    await settled(bed.redis);
    const status = await cli('status', 'v60', ...redisFlags(), '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin'));
    expect(status.code).toBe(1);
    expect(status.stdout).toContain('desired:   none: no event of this VPS has taken effect (its last one was dead-lettered, below)');
    expect(status.stdout).toMatch(/outcome: {3}dead-lettered \(event \d+-\d+, register, at [^)]+\): \[address.public-unicast\] spec.address: "10.0.0.60" is in the private/);
    expect(status.stdout).not.toContain('[address.public-unicast]: [address.public-unicast]');
    expect(status.stdout).toMatch(/dead letter: \d+-\d+ \(edge-registrar dlq show/);
  });

  it('looks at the managed Telemetry without --telemetry: on when it exists, off when it does not', async () => {
    const kubeconfig = kubeconfigFor(inject('cluster'), 'admin');
    await kubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', 'edge-registrar-vps', '--ignore-not-found']);
    const sync = await startSync({ telemetry: { ...testSyncConfig('', '').telemetry, enabled: true, coalesceMs: 100 } });
    await cli('publish', 'register', ...redisFlags(), '--vps-id', 'v61', '--name', 'vps-jp-61', '--address', '103.21.244.61', '--country', 'jp');
    await settled(bed.redis);
    await waitFor(async () => (await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text()).includes('edge_registrar_telemetry_vps 1'), 'the Telemetry to map the VPS');
    const on = await cli('status', 'v61', ...redisFlags(), '--kubeconfig', kubeconfig);
    expect([on.code, on.stdout]).toEqual([0, expect.stringContaining('telemetry: attributed in istio-system/edge-registrar-vps: tag vps maps 103.21.244.61 to vps-jp-61')]);
    await sync.stop();
    await kubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', 'edge-registrar-vps']);
    const off = await cli('status', 'v61', ...redisFlags(), '--kubeconfig', kubeconfig);
    expect(off.stdout).toContain('telemetry: not checked: per-VPS metrics are off: there is no Telemetry istio-system/edge-registrar-vps');
    const required = await cli('status', 'v61', ...redisFlags(), '--kubeconfig', kubeconfig, '--telemetry');
    expect(required.stdout).toContain('telemetry: NOT attributed in istio-system/edge-registrar-vps: the Telemetry does not exist');
  });
});
