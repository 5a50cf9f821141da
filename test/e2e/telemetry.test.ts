/**
 * The managed Telemetry: its CEL expressions evaluated by cel-go (Google's reference CEL, with
 * the same parser limits as Envoy's cel-cpp); the sync daemon keeping it in step with the
 * fleet on the real API server with Istio's CRDs (coalesced, repaired, never touching a
 * Telemetry it does not own); and what istiod makes of it for the ingress gateway.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { SyncConfig } from '../../src/config/sync.ts';
import { DEFAULT_TELEMETRY_OPTIONS, FLEET_DIGEST_ANNOTATION, UNMAPPED_ANNOTATION, VPS_COUNT_ANNOTATION, renderTelemetry, type TelemetryOptions } from '../../src/mesh-telemetry/telemetry-object.ts';
import type { FleetMember } from '../../src/mesh-telemetry/fit-mapping.ts';
import { envoyAddressForm, renderTagExpressions, type MappedVps } from '../../src/mesh-telemetry/tag-expressions.ts';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { TelemetryKeeper } from '../../src/mesh-telemetry/telemetry-keeper.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createRegistry, createTelemetryMetrics } from '../../src/observability/metrics.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { sampleFleet } from '../harness/sample-fleet.ts';
import { evaluateCel, mergedValue, type CelRequest } from './cel-support.ts';
import type { K8sObject } from './helm-support.ts';
import { listenerOf, meshView } from './istio-support.ts';
import { publishRegister, publishRetire, settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { kubectl, mustKubectl, waitFor } from './support.ts';

const HEADER = 'x-envoy-external-address';
const TELEMETRY_NS = 'istio-system';
const TELEMETRY_NAME = 'edge-registrar-vps';
const OPTIONS: TelemetryOptions = { ...DEFAULT_TELEMETRY_OPTIONS, namespace: TELEMETRY_NS, name: TELEMETRY_NAME };

const request = (address?: string): CelRequest => ({ headers: address === undefined ? {} : { [HEADER]: address } });
/** A VPS's address as the gateway writes it into the header (RFC 5952 for IPv6). */
const asSent = (vps: MappedVps): string => envoyAddressForm(vps.address)!;
/** The vps tags' expressions of a stored Telemetry (its first metric's overrides). */
const expressionsOf = (telemetry: K8sObject): string[] => {
  const overrides = telemetry.spec.metrics[0].overrides[0].tagOverrides as Record<string, { value: string }>;
  return Object.entries(overrides).filter(([tag]) => !tag.startsWith('vps_country')).map(([, o]) => o.value);
};

describe('the tag expressions, evaluated by cel-go', () => {
  it('map every registered address of a 5,000-VPS fleet to its name and country, each tag set naming the caller once', async () => {
    const fleet = sampleFleet(5000);
    const { tags } = renderTelemetry(OPTIONS, fleet);
    const vpsTags = tags.filter((t) => t.tag.startsWith('vps') && !t.tag.startsWith('vps_country'));
    const countryTags = tags.filter((t) => t.tag.startsWith('vps_country'));
    expect(vpsTags.length).toBeGreaterThan(1); // 5,000 VPSs need shards under the 40,000-codepoint budget
    for (const t of tags) expect(t.expression.length).toBeLessThanOrEqual(40_000);
    const sample = fleet.filter((_, i) => i % 97 === 0);
    const requests = [...sample.map((v) => request(asSent(v))), request('203.0.113.250'), request('2001:db8::1'), request(undefined)];
    const byName = await evaluateCel(vpsTags.map((t) => t.expression), requests);
    const byCountry = await evaluateCel(countryTags.map((t) => t.expression), requests);
    expect([...byName.compiled, ...byCountry.compiled].every((c) => c.ok)).toBe(true);
    sample.forEach((v, i) => {
      expect(mergedValue(byName, i)).toEqual([v.name]);
      expect(mergedValue(byCountry, i)).toEqual([v.country]);
    });
    const unknown4 = sample.length;
    expect([mergedValue(byName, unknown4), mergedValue(byName, unknown4 + 1), mergedValue(byName, unknown4 + 2)]).toEqual([['unregistered'], ['unregistered'], ['none']]);
    expect([mergedValue(byCountry, unknown4), mergedValue(byCountry, unknown4 + 2)]).toEqual([['unregistered'], ['none']]);
  });

  it('treat hostile header values as data: injection attempts, odd forms and a 1 MiB value are just unregistered', async () => {
    const fleet = sampleFleet(50);
    const expressions = renderTagExpressions('vps', fleet, (v) => v.name).map((t) => t.expression);
    const hostile = ["' || true || '", "45.0.0.1' : 'x'}[a] + '", '45.0.0.1 ', ' 45.0.0.1', '45.0.0.01', '::FFFF:45.0.0.1', '2400:CB00:0::4', '45.0.0.1,45.0.1.2', '', 'x'.repeat(1 << 20), '\u0000', '🙂'];
    const outcome = await evaluateCel(expressions, hostile.map((h) => request(h)));
    hostile.forEach((_, i) => expect(mergedValue(outcome, i)).toEqual(['unregistered']));
    // The registered forms themselves still resolve.
    const known = await evaluateCel(expressions, [request(asSent(fleet[0]!)), request(asSent(fleet[4]!))]);
    expect([mergedValue(known, 0), mergedValue(known, 1)]).toEqual([[fleet[0]!.name], [fleet[4]!.name]]);
  });

  // Envoy writes x-envoy-external-address on an external request and sets x-envoy-internal on
  // an internal one, whose client-sent x-envoy-external-address it leaves in place
  // (docs/attribution.md): a pod the gateway counts as internal could name any VPS.
  it('attribute only what the gateway established: a forged address on an internal request names no VPS, for IPv4 and IPv6', async () => {
    const fleet = sampleFleet(50);
    const v4 = fleet[0]!;
    const v6 = fleet[4]!;
    expect(asSent(v6)).toContain(':');
    const forged = (vps: MappedVps): CelRequest => ({ headers: { [HEADER]: asSent(vps), 'x-envoy-internal': 'true' } });
    const requests = [request(asSent(v4)), request(asSent(v6)), forged(v4), forged(v6), request('203.0.113.250'), request('2001:db8::1'), request(undefined), { headers: { 'x-envoy-internal': 'true' } }];
    const vpsTags = await evaluateCel(renderTagExpressions('vps', fleet, (v) => v.name).map((t) => t.expression), requests);
    const countryTags = await evaluateCel(renderTagExpressions('vps_country', fleet, (v) => v.country).map((t) => t.expression), requests);
    expect(requests.map((_, i) => mergedValue(vpsTags, i))).toEqual([[v4.name], [v6.name], ['none'], ['none'], ['unregistered'], ['unregistered'], ['none'], ['none']]);
    expect(requests.map((_, i) => mergedValue(countryTags, i))).toEqual([[v4.country], [v6.country], ['none'], ['none'], ['unregistered'], ['unregistered'], ['none'], ['none']]);
    // The Kiali option's source tags: a forged internal request keeps the gateway's own values.
    const node = { metadata: { WORKLOAD_NAME: 'istio-ingressgateway', NAMESPACE: 'istio-system', LABELS: { app: 'istio-ingressgateway' } } };
    const source = renderTelemetry({ ...OPTIONS, sourceIdentity: { namespace: 'airport-prod', app: 'xrayr', version: 'v1' } }, fleet).tags.filter((t) => t.tag === 'source_workload');
    const workload = await evaluateCel(source.map((t) => t.expression), [request(asSent(v4)), forged(v4), forged(v6)].map((r) => ({ ...r, node })));
    expect(workload.results.map((r) => r[0]?.value)).toEqual([v4.name, 'istio-ingressgateway', 'istio-ingressgateway']);
  });

  it("source identity: at 1,300 VPSs (about the most one expression per tag holds) each registered address names its entry, every other request keeps the gateway's own node values", async () => {
    const fleet = sampleFleet(1300);
    const rendered = renderTelemetry({ ...OPTIONS, sourceIdentity: { namespace: 'airport-prod', app: 'xrayr', version: 'v1' } }, fleet);
    expect(rendered.sourceIdentity).toEqual({ state: 'on' });
    const source = rendered.tags.filter((t) => t.tag.startsWith('source_'));
    expect(source.map((t) => t.tag)).toEqual(['source_workload', 'source_workload_namespace', 'source_app', 'source_version', 'source_canonical_service', 'source_canonical_revision']);
    const node = { metadata: { WORKLOAD_NAME: 'istio-ingressgateway', NAMESPACE: 'istio-system', LABELS: { app: 'istio-ingressgateway', 'service.istio.io/canonical-name': 'istio-ingressgateway', 'service.istio.io/canonical-revision': 'latest' } } };
    const sample = fleet.filter((_, i) => i % 61 === 0);
    const others = ['203.0.113.250', "' || true || '", 'x'.repeat(1 << 20), ''];
    const requests: CelRequest[] = [...sample.map((v) => ({ ...request(asSent(v)), node })), ...others.map((h) => ({ ...request(h), node })), { ...request(undefined), node }, request(asSent(fleet[0]!)), request('203.0.113.250')];
    const outcome = await evaluateCel(source.map((t) => t.expression), requests);
    expect(outcome.compiled.every((c) => c.ok)).toBe(true);
    const row = (r: number) => outcome.results[r]!.map((v) => v.value ?? `error: ${v.error}`).join(' ');
    sample.forEach((v, i) => expect(row(i)).toBe(`${v.name} airport-prod xrayr v1 xrayr v1`));
    // No version label on the gateway: '' as the stats filter itself gives.
    for (let r = sample.length; r < sample.length + others.length + 1; r++) expect(row(r)).toBe('istio-ingressgateway istio-system istio-ingressgateway  istio-ingressgateway latest');
    // A proxy whose node carries no metadata: a VPS is still named; anyone else gets '' (the filter's own value then), never an error.
    expect(row(requests.length - 2)).toBe(`${fleet[0]!.name} airport-prod xrayr v1 xrayr v1`);
    expect(row(requests.length - 1)).toBe('     ');
  });

  it('need the shards: one expression for 5,000 VPSs passes the 100,000-codepoint parser limit and does not parse', async () => {
    const [single] = renderTagExpressions('vps', sampleFleet(5000), (v) => v.name, 1_000_000);
    expect(single!.expression.length).toBeGreaterThan(100_000);
    const outcome = await evaluateCel([single!.expression], [request('45.0.0.1')]);
    expect(outcome.compiled[0]!.ok).toBe(false);
    expect(outcome.compiled[0]!.error).toMatch(/size exceeds limit|code point/i);
  });
});

describe('the sync daemon keeps the Telemetry in step', () => {
  let bed: SyncTestBed | undefined;
  let sync: RunningSync | undefined;

  const getTelemetry = async (name = TELEMETRY_NAME): Promise<K8sObject | undefined> => {
    const res = await kubectl('admin', ['-n', TELEMETRY_NS, 'get', 'telemetry', name, '-o', 'json']);
    return res.code === 0 ? (JSON.parse(res.stdout) as K8sObject) : undefined;
  };
  const metric = async (series: string): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${sync!.port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.split(' ')[1]);
  };
  const start = async (overrides: Partial<SyncConfig> = {}): Promise<RunningSync> => {
    const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed!.redisServer.url);
    sync = await startTestSync({ ...base, telemetry: { ...base.telemetry, enabled: true, coalesceMs: 500 }, ...overrides });
    return sync;
  };

  beforeAll(async () => {
    bed = await startSyncTestBed('telemetry');
  });
  afterAll(async () => {
    await sync?.stop();
    await kubectl('admin', ['-n', TELEMETRY_NS, 'delete', 'telemetry', '--all']);
    if (bed !== undefined) await stopSyncTestBed(bed);
  });

  it('writes it from the registered VPSs, changes it within seconds of a register or retire, and its expressions map them', async () => {
    await start();
    await publishRegister(bed!.redis, 'vps-5101', 'vps-jp-51', '103.21.244.51', 'jp');
    await publishRegister(bed!.redis, 'vps-5102', 'vps-sg-52', '2400:cb00:2049::52', 'sg');
    await settled(bed!.redis);
    await waitFor(async () => (await getTelemetry())?.metadata.annotations?.[VPS_COUNT_ANNOTATION] === '2', 'the Telemetry to map 2 VPSs', 15_000);
    const first = (await getTelemetry())!;
    expect(first.metadata.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'edge-registrar' });
    expect(first.spec.selector).toEqual({ matchLabels: { istio: 'ingressgateway' } });
    expect(first.spec.metrics[0].overrides.map((o: { match: unknown }) => o.match)).toEqual([
      { metric: 'REQUEST_COUNT', mode: 'CLIENT' },
      { metric: 'REQUEST_DURATION', mode: 'CLIENT' },
    ]);
    // One vps tag for two VPSs: the gauge counts the vps dimension's shards only, not vps_country.
    expect(await metric('edge_registrar_telemetry_shard_tags')).toBe(1);
    const before = await evaluateCel(expressionsOf(first), [request('103.21.244.51'), request('2400:cb00:2049::52'), request('103.21.244.53')]);
    expect([0, 1, 2].map((i) => mergedValue(before, i))).toEqual([['vps-jp-51'], ['vps-sg-52'], ['unregistered']]);

    const retiredAt = Date.now();
    await publishRetire(bed!.redis, 'vps-5101');
    await publishRegister(bed!.redis, 'vps-5103', 'vps-jp-53', '103.21.244.53', 'jp');
    await waitFor(async () => (await getTelemetry())?.metadata.annotations?.[FLEET_DIGEST_ANNOTATION] !== first.metadata.annotations?.[FLEET_DIGEST_ANNOTATION] && (await getTelemetry())?.metadata.annotations?.[VPS_COUNT_ANNOTATION] === '2', 'the Telemetry to follow the retire and the register', 15_000);
    expect(Date.now() - retiredAt).toBeLessThan(10_000);
    const after = await evaluateCel(expressionsOf((await getTelemetry())!), [request('103.21.244.51'), request('2400:cb00:2049::52'), request('103.21.244.53')]);
    expect([0, 1, 2].map((i) => mergedValue(after, i))).toEqual([['unregistered'], ['vps-sg-52'], ['vps-jp-53']]);
  });

  it('coalesces a burst of 300 registers into a handful of writes', async () => {
    const writesBefore = await metric('edge_registrar_telemetry_syncs_total{outcome="applied"}');
    const ids = Array.from({ length: 300 }, (_, i) => i);
    for (const i of ids) await publishRegister(bed!.redis, `vps-6${String(i).padStart(3, '0')}`, `vps-us-6${String(i).padStart(3, '0')}`, `104.16.${Math.floor(i / 200)}.${(i % 200) + 20}`, 'us');
    await settled(bed!.redis, 120_000);
    await waitFor(async () => (await getTelemetry())?.metadata.annotations?.[VPS_COUNT_ANNOTATION] === '302', 'the Telemetry to map 302 VPSs', 30_000);
    const writes = (await metric('edge_registrar_telemetry_syncs_total{outcome="applied"}')) - writesBefore;
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(15);
  });

  it('repairs drift: an edited Telemetry is rewritten on the next pass', async () => {
    await sync!.stop();
    sync = undefined;
    await start({ resyncIntervalMs: 2_000 });
    const current = (await getTelemetry())!;
    await mustKubectl('admin', ['-n', TELEMETRY_NS, 'patch', 'telemetry', TELEMETRY_NAME, '--type', 'merge', '-p', JSON.stringify({ spec: { metrics: [{ providers: [{ name: 'prometheus' }] }] } })]);
    await waitFor(async () => JSON.stringify((await getTelemetry())?.spec) === JSON.stringify(current.spec), 'the edited Telemetry to be repaired', 20_000);
  });

  it('never touches a Telemetry of that name it does not own', async () => {
    await sync!.stop();
    sync = undefined;
    const theirs = { apiVersion: 'telemetry.istio.io/v1', kind: 'Telemetry', metadata: { name: 'edge-registrar-vps', namespace: TELEMETRY_NS }, spec: { metrics: [{ providers: [{ name: 'prometheus' }] }] } };
    await mustKubectl('admin', ['-n', TELEMETRY_NS, 'delete', 'telemetry', TELEMETRY_NAME]);
    await mustKubectl('admin', ['apply', '-f', '-'], theirs);
    await start();
    await waitFor(async () => (await metric('edge_registrar_telemetry_syncs_total{outcome="refused"}')) > 0, 'the keeper to refuse the Telemetry it does not own', 15_000);
    expect((await getTelemetry())!.spec).toEqual(theirs.spec);
    expect((await getTelemetry())!.metadata.labels?.['app.kubernetes.io/managed-by']).toBeUndefined();
  });

  it('may write that one Telemetry and no other', async () => {
    const can = async (verb: string, resource: string) => (await kubectl('admin', ['auth', 'can-i', verb, resource, '-n', TELEMETRY_NS, '--as', 'system:serviceaccount:airport-prod:edge-registrar-sync'])).stdout.trim();
    expect(await can('patch', `telemetries.telemetry.istio.io/${TELEMETRY_NAME}`)).toBe('yes');
    expect(await can('create', `telemetries.telemetry.istio.io/${TELEMETRY_NAME}`)).toBe('yes');
    expect(await can('patch', 'telemetries.telemetry.istio.io/mesh-default')).toBe('no');
    expect(await can('delete', `telemetries.telemetry.istio.io/${TELEMETRY_NAME}`)).toBe('no');
    expect(await can('list', 'telemetries.telemetry.istio.io')).toBe('no');
  });
});

describe('a fleet too large for one Telemetry', () => {
  /** A keeper on the real API server, its log lines and its metrics. */
  function keeperFor(fleet: () => readonly FleetMember[], options: TelemetryOptions) {
    const lines: string[] = [];
    const logger = createLogger('info', 'telemetry-too-large', { write: (line: string): void => { lines.push(line); } });
    const registry = createRegistry(false);
    const keeper = new TelemetryKeeper({
      kubeConfig: loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')),
      options,
      fleet,
      isLeader: () => true,
      coalesceMs: 200,
      repairIntervalMs: 3_600_000,
      metrics: createTelemetryMetrics(registry),
      logger,
    });
    const value = async (series: string): Promise<number> => Number((await registry.metrics()).split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1] ?? 0);
    return { keeper, lines, value };
  }

  // At about 10,900 VPSs with three metrics the object passed etcd's 1.5 MiB: the keeper sent
  // it, the API server refused it, and the keeper tried again every 5 s, forever, logging each
  // time. Then it was refused before anything was sent, which left the last mapping in force,
  // stale names and all. Now the largest mapping that fits is written.
  it('writes the largest mapping that fits, the newest registrations left out: one log line, gauges with the reason and the count, no retry on a timer; the whole fleet once it fits', async () => {
    let fleet: FleetMember[] = sampleFleet(11_000);
    const { keeper, lines, value } = keeperFor(() => fleet, { ...OPTIONS, metrics: ['REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE'] });
    keeper.start();
    try {
      await waitFor(async () => (await value('edge_registrar_telemetry_syncs_total{outcome="applied"}')) === 1, 'the Telemetry to be written');
      // Left alone for 12 s: no pass on a timer (the fleet and the cluster have not changed).
      await new Promise((r) => setTimeout(r, 12_000));
      const cut = lines.filter((l) => l.includes('the whole fleet would not fit'));
      expect(cut).toHaveLength(1);
      expect(cut[0]).toMatch(/"refusal":"object-too-large".*"msg":"the Telemetry maps (\d+) of 11000 VPSs: the whole fleet would not fit \(\d+ bytes for 11000 VPSs, over 1400000/);
      const mapped = Number(/maps (\d+) of 11000/.exec(cut[0] ?? '')?.[1]);
      expect(mapped).toBeGreaterThan(8_500);
      expect(mapped).toBeLessThan(11_000);
      expect(await value('edge_registrar_telemetry_syncs_total{outcome="applied"}')).toBe(1);
      expect(await value('edge_registrar_telemetry_syncs_total{outcome="failed"}')).toBe(0);
      expect(await value('edge_registrar_telemetry_refused{reason="object-too-large"}')).toBe(1);
      expect(await value('edge_registrar_telemetry_unmapped_vps')).toBe(11_000 - mapped);
      expect(await value('edge_registrar_telemetry_object_bytes')).toBeLessThanOrEqual(1_400_000);
      const stored = JSON.parse(await mustKubectl('admin', ['-n', TELEMETRY_NS, 'get', 'telemetry', TELEMETRY_NAME, '-o', 'json'])) as K8sObject;
      expect(stored.metadata.annotations).toMatchObject({ [VPS_COUNT_ANNOTATION]: String(mapped), [UNMAPPED_ANNOTATION]: String(11_000 - mapped) });
      // The fleet shrinks: the whole of it is written at the next change, and the refusal cleared.
      fleet = sampleFleet(8_000);
      keeper.fleetChanged();
      await waitFor(async () => (await value('edge_registrar_telemetry_syncs_total{outcome="applied"}')) === 2, 'the Telemetry to be written', 60_000);
      expect(await value('edge_registrar_telemetry_refused{reason="object-too-large"}')).toBe(0);
      expect(await value('edge_registrar_telemetry_unmapped_vps')).toBe(0);
      expect(lines.some((l) => l.includes('managed Telemetry written again'))).toBe(true);
    } finally {
      await keeper.stop();
      await kubectl('admin', ['-n', TELEMETRY_NS, 'delete', 'telemetry', TELEMETRY_NAME, '--ignore-not-found']);
    }
  }, 120_000);

  // A wrong name is worse than none. A fleet exactly at the limit; one VPS retires and another
  // registers at its address with a longer name, which takes the object over. Refusing to write
  // left the old mapping in force, and the new VPS's requests were counted as the retired one's.
  it('at the limit, an address handed from a retired VPS to a new one is never counted as the retired VPS: the newcomer is left unregistered', async () => {
    const base = sampleFleet(300, { ipv6: false }).map((v, i) => ({ ...v, vpsId: `v${i}`, streamId: `1700000000000-${i}` }));
    const limit = Buffer.byteLength(JSON.stringify(renderTelemetry(OPTIONS, base).object));
    let fleet: FleetMember[] = base;
    const { keeper, lines, value } = keeperFor(() => fleet, { ...OPTIONS, maxObjectBytes: limit });
    keeper.start();
    try {
      await waitFor(async () => (await value('edge_registrar_telemetry_syncs_total{outcome="applied"}')) === 1, 'the whole fleet to be written');
      const retired = base[42]!;
      const newcomer = { vpsId: 'v9000', name: `vps-${retired.country}-90000042`, country: retired.country, address: retired.address, streamId: '1700000009000-0' };
      fleet = [...base.filter((v) => v !== retired), newcomer];
      keeper.fleetChanged();
      await waitFor(async () => (await value('edge_registrar_telemetry_syncs_total{outcome="applied"}')) === 2, 'the changed fleet to be written');
      const stored = JSON.parse(await mustKubectl('admin', ['-n', TELEMETRY_NS, 'get', 'telemetry', TELEMETRY_NAME, '-o', 'json'])) as K8sObject;
      const outcome = await evaluateCel(expressionsOf(stored), [request(asSent(retired)), request(asSent(base[7]!))]);
      expect(mergedValue(outcome, 0)).toEqual(['unregistered']);
      expect(mergedValue(outcome, 1)).toEqual([base[7]!.name]);
      expect(stored.metadata.annotations).toMatchObject({ [VPS_COUNT_ANNOTATION]: '299', [UNMAPPED_ANNOTATION]: '1' });
      expect(await value('edge_registrar_telemetry_unmapped_vps')).toBe(1);
      expect(lines.find((l) => l.includes('the whole fleet would not fit'))).toContain(`"leftOut":["${newcomer.name}"]`);
    } finally {
      await keeper.stop();
      await kubectl('admin', ['-n', TELEMETRY_NS, 'delete', 'telemetry', TELEMETRY_NAME, '--ignore-not-found']);
    }
  }, 120_000);
});

describe("what istiod makes of Telemetry overrides (Istio's own config generation)", () => {
  // The mechanism works on Xboard's side too, but Kiali's graph does not read what it changes
  // (test/e2e/kiali-picture.test.ts, docs/attribution.md): why the option lives at the gateway.
  it("a SERVER-mode override of the source tags reaches Xboard's inbound stats filter", async () => {
    const override = "connection.uri_san_peer_certificate == 'spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account' ? 'vps-jp-01' : (has(filter_state.downstream_peer) ? filter_state.downstream_peer.workload : 'unknown')";
    const serverSide = {
      apiVersion: 'telemetry.istio.io/v1',
      kind: 'Telemetry',
      metadata: { name: 'xboard-sources', namespace: 'airport-prod' },
      spec: { selector: { matchLabels: { app: 'xboard' } }, metrics: [{ providers: [{ name: 'prometheus' }], overrides: [{ match: { metric: 'REQUEST_COUNT', mode: 'SERVER' }, tagOverrides: { source_workload: { value: override } } }] }] },
    };
    const xboard: K8sObject[] = [
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'xboard', namespace: 'airport-prod' }, spec: { selector: { app: 'xboard' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'xboard-5d8c7', namespace: 'airport-prod', labels: { app: 'xboard' } }, spec: { containers: [{ name: 'xboard', image: 'xboard', ports: [{ containerPort: 8080 }] }] }, status: { podIP: '10.244.0.10', phase: 'Running' } },
    ];
    const view = await meshView([...xboard, serverSide], { type: 'sidecar', namespace: 'airport-prod', labels: { app: 'xboard' }, id: 'xboard-5d8c7', ip: '10.244.0.10' });
    const inbound = listenerOf(view, 'virtualInbound').filterChains.flatMap((c) => c.filters.flatMap((f) => f.httpFilters ?? [])).filter((h) => h.name === 'istio.stats');
    expect(inbound.length).toBeGreaterThan(0);
    const configs = inbound.map((h) => h.config as { metrics?: { name?: string; dimensions?: Record<string, string> }[] });
    expect(configs.some((c) => c.metrics?.some((m) => m.name === 'requests_total' && m.dimensions?.source_workload === override))).toBe(true);
  });
});

describe("what istiod gives the ingress gateway (Istio's own config generation)", () => {
  const GATEWAY = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'xboard', namespace: 'airport-prod' },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 8080, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
  };
  const ROUTER = { type: 'router', namespace: TELEMETRY_NS, labels: { istio: 'ingressgateway' }, id: 'istio-ingressgateway-7f9c' } as const;
  /** The gateway settings the README documents: the client address from the PROXY protocol, no X-Forwarded-For hop trusted. */
  const DOCUMENTED_TOPOLOGY = 'defaultConfig:\n  gatewayTopology:\n    proxyProtocol: {}\n    numTrustedProxies: 0\n';
  const managerOf = (view: Awaited<ReturnType<typeof meshView>>) => listenerOf(view, '0.0.0.0_8080').filterChains[0]!.filters.find((f) => f.manager !== undefined)!.manager!;

  // What the attribution rests on (docs/attribution.md): the PROXY protocol's address is the
  // connection's peer, Envoy uses it (use_remote_address) rather than any X-Forwarded-For hop,
  // and with no internal addresses every request is external, so Envoy writes
  // x-envoy-external-address itself. If istiod's output changes, this fails.
  it('reads the client address from the PROXY protocol, trusts no X-Forwarded-For hop, and counts no peer as internal, under the documented settings', async () => {
    const view = await meshView([GATEWAY], ROUTER, DOCUMENTED_TOPOLOGY);
    expect(listenerOf(view, '0.0.0.0_8080').listenerFilters[0]).toBe('envoy.filters.listener.proxy_protocol');
    expect(managerOf(view)).toEqual({ useRemoteAddress: true, xffNumTrustedHops: 0, skipXffAppend: false, internalAddressConfig: null });
    // Without the PROXY protocol the peer is the load balancer; doctor says so (gateway.client-address).
    expect(listenerOf(await meshView([GATEWAY], ROUTER), '0.0.0.0_8080').listenerFilters).not.toContain('envoy.filters.listener.proxy_protocol');
  });

  it("makes meshNetworks' fromCidr ranges internal, where a client's own x-envoy-external-address survives (which the expressions refuse to attribute)", async () => {
    const networks = 'networks:\n  network1:\n    endpoints:\n    - fromCidr: 10.244.0.0/16\n    gateways:\n    - address: 192.0.2.10\n      port: 15443\n';
    const view = await meshView([GATEWAY], ROUTER, DOCUMENTED_TOPOLOGY, networks);
    expect(managerOf(view)).toMatchObject({ useRemoteAddress: true, internalAddressConfig: { cidrRanges: [{ addressPrefix: '10.244.0.0', prefixLen: 16 }] } });
  });


  // One override with ALL_METRICS would shorten the object, but istiod expands it into every
  // metric (pilot/pkg/model/telemetry.go: "we always flatten ALL_METRICS into each metric"),
  // TCP ones included, where the tags read no request headers: the gateway would carry ten
  // copies of the expressions instead of two. So the keeper writes one override per chosen metric.
  it('expands a single ALL_METRICS override into ten copies of the tags at the gateway, TCP metrics included', async () => {
    const { object, tags } = renderTelemetry(OPTIONS, sampleFleet(40));
    const spec = object.spec as { metrics: { providers: unknown; overrides: { match: unknown; tagOverrides: unknown }[] }[] };
    const allMetrics = { ...object, spec: { ...spec, metrics: [{ ...spec.metrics[0], overrides: [{ match: { metric: 'ALL_METRICS', mode: 'CLIENT' }, tagOverrides: spec.metrics[0]!.overrides[0]!.tagOverrides }] }] } };
    const statsOf = async (telemetry: unknown): Promise<{ metrics: { name?: string; dimensions?: Record<string, string> }[]; bytes: number }> => {
      const view = await meshView([telemetry as K8sObject, GATEWAY], ROUTER);
      const listener = listenerOf(view, '0.0.0.0_8080');
      const stats = listener.filterChains[0]!.filters.flatMap((f) => f.httpFilters ?? []).find((h) => h.name === 'istio.stats');
      return { metrics: (stats?.config as { metrics?: { name?: string; dimensions?: Record<string, string> }[] }).metrics ?? [], bytes: listener.bytes };
    };
    const tagged = (metrics: { name?: string; dimensions?: Record<string, string> }[]): string[] => metrics.filter((m) => m.dimensions?.vps === tags[0]!.expression).map((m) => m.name ?? '(all)').sort();
    const perMetric = await statsOf(object);
    const expanded = await statsOf(allMetrics);
    expect(tagged(perMetric.metrics)).toEqual(['request_duration_milliseconds', 'requests_total']);
    expect(tagged(expanded.metrics)).toEqual(['request_bytes', 'request_duration_milliseconds', 'request_messages_total', 'requests_total', 'response_bytes', 'response_messages_total', 'tcp_connections_closed_total', 'tcp_connections_opened_total', 'tcp_received_bytes_total', 'tcp_sent_bytes_total']);
    console.error(`[telemetry] gateway HTTP listener: ${perMetric.bytes} bytes with one override per chosen metric (2), ${expanded.bytes} with one ALL_METRICS override`);
    expect(expanded.bytes).toBeGreaterThan(perMetric.bytes * 3);
  });

  it("puts the tag expressions, exactly as rendered, into the gateway's stats filter for its client-side metrics", async () => {
    // With the source identity overrides too: the standard source tags reach the same filter.
    const { object, tags } = renderTelemetry({ ...OPTIONS, sourceIdentity: { namespace: 'airport-prod', app: 'xrayr', version: 'v1' } }, sampleFleet(40));
    expect(tags.map((t) => t.tag)).toContain('source_workload');
    const gateway = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'Gateway',
      metadata: { name: 'xboard', namespace: 'airport-prod' },
      spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 8080, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
    };
    const view = await meshView([object, gateway], { type: 'router', namespace: TELEMETRY_NS, labels: { istio: 'ingressgateway' }, id: 'istio-ingressgateway-7f9c' });
    const chain = listenerOf(view, '0.0.0.0_8080').filterChains[0]!;
    const stats = chain.filters.flatMap((f) => f.httpFilters ?? []).find((h) => h.name === 'istio.stats');
    expect(stats).toBeDefined();
    const config = stats!.config as { metrics?: { name?: string; dimensions?: Record<string, string> }[] };
    const wanted = Object.fromEntries(tags.map((t) => [t.tag, t.expression]));
    for (const metric of ['requests_total', 'request_duration_milliseconds']) {
      const entry = config.metrics?.find((m) => m.name === metric);
      expect(entry?.dimensions).toEqual(wanted);
    }
  });
});
