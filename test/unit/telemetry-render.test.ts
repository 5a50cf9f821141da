/** The managed Telemetry's rendering: pure, deterministic, within the expression budget. */
import { describe, expect, it } from 'vitest';
import { syncConfig } from '../../src/config/sync.ts';
import { celString, envoyAddressForm, isShardTagOf, renderTagExpressions, TagRenderError, type MappedVps } from '../../src/mesh-telemetry/tag-expressions.ts';
import { DEFAULT_TELEMETRY_OPTIONS, isManagedTelemetry, renderTelemetry } from '../../src/mesh-telemetry/telemetry-object.ts';
import { SOURCE_IDENTITY_TAGS } from '../../src/mesh-telemetry/source-identity.ts';

function fleetOf(n: number): MappedVps[] {
  return Array.from({ length: n }, (_, i) => ({ name: `vps-jp-${1000 + i}`, country: i % 2 === 0 ? 'jp' : 'sg', address: i % 4 === 3 ? `2400:cb00::${(i + 1).toString(16)}` : `45.${i >> 8}.${i & 255}.${1 + (i % 250)}` }));
}

const OPTIONS = { ...DEFAULT_TELEMETRY_OPTIONS, namespace: 'istio-system', name: 'edge-registrar-vps' };

describe('renderTagExpressions', () => {
  it('names every registered address once, in one expression for a small fleet', () => {
    const fleet = fleetOf(100);
    const [only, ...rest] = renderTagExpressions('vps', fleet, (v) => v.name);
    expect(rest).toEqual([]);
    expect(only!.tag).toBe('vps');
    expect(only!.entries).toBe(100);
    for (const v of fleet) expect(only!.expression.split(celString(envoyAddressForm(v.address)!)).length - 1).toBe(1);
    // Only an address the gateway wrote itself: never one on a request Envoy counts as internal.
    expect(only!.expression.startsWith("'x-envoy-external-address' in request.headers&&!('x-envoy-internal' in request.headers)?")).toBe(true);
    expect(only!.expression.endsWith(":'none'")).toBe(true);
  });

  it('is deterministic: the same fleet in another order gives the same text', () => {
    const fleet = fleetOf(300);
    expect(renderTagExpressions('vps', [...fleet].reverse(), (v) => v.name)).toEqual(renderTagExpressions('vps', fleet, (v) => v.name));
  });

  it.each([
    { vps: 200, limit: 3_000 },
    { vps: 2_000, limit: 20_000 },
    { vps: 5_000, limit: 40_000 },
  ])('splits $vps VPSs into shard tags within $limit codepoints, covering each address exactly once', ({ vps, limit }) => {
    const fleet = fleetOf(vps);
    const shards = renderTagExpressions('vps', fleet, (v) => v.name, limit);
    expect(shards.length).toBeGreaterThan(1);
    expect(shards.map((s) => s.tag)).toEqual(shards.map((_, i) => (i === 0 ? 'vps' : `vps_${i}`)));
    for (const s of shards) expect(s.expression.length).toBeLessThanOrEqual(limit);
    expect(shards.reduce((n, s) => n + s.entries, 0)).toBe(vps);
    // Only the first shard says "none" without the header; the others say "".
    expect(shards.map((s) => s.expression.endsWith(":'none'"))).toEqual(shards.map((_, i) => i === 0));
  });

  it('refuses, naming the limit, when one bucket alone passes it', () => {
    expect(() => renderTagExpressions('vps', fleetOf(2_000), (v) => v.name, 2_000)).toThrow(TagRenderError);
    expect(() => renderTagExpressions('vps', fleetOf(2_000), (v) => v.name, 2_000)).toThrow(/over the limit of 2000/);
  });

  it.each([
    ['103.21.244.41', '103.21.244.41'],
    ['2400:CB00:2049:0:0:0:0:42', '2400:cb00:2049::42'],
    ['::ffff:103.21.244.41', '103.21.244.41'],
    ['vps.example.com', undefined],
  ])('looks %s up as Envoy writes it: %s', (address, form) => {
    expect(envoyAddressForm(address)).toBe(form);
  });

  it('tells a dimension\'s shard tags from another dimension that shares its prefix', () => {
    expect(['vps', 'vps_1', 'vps_16', 'vps_country', 'vps_country_1', 'vps_', 'vpsx'].filter((t) => isShardTagOf(t, 'vps'))).toEqual(['vps', 'vps_1', 'vps_16']);
    expect(['vps_country', 'vps_country_2', 'vps'].filter((t) => isShardTagOf(t, 'vps_country'))).toEqual(['vps_country', 'vps_country_2']);
  });

  it('quotes CEL strings so no value can end the literal', () => {
    expect(celString("a'b\\c\u0001")).toBe("'a\\'b\\\\c\\x01'");
  });
});

describe('renderTelemetry', () => {
  it('overrides the tags of each configured metric in mode CLIENT, on the gateway selector', () => {
    const { object, tags, vpsCount } = renderTelemetry(OPTIONS, fleetOf(3));
    expect(vpsCount).toBe(3);
    expect(tags.map((t) => t.tag)).toEqual(['vps', 'vps_country']);
    expect(object.metadata).toMatchObject({ name: 'edge-registrar-vps', namespace: 'istio-system', labels: { 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-count': '3' } });
    expect(object.spec).toMatchObject({ selector: { matchLabels: { istio: 'ingressgateway' } } });
    const metrics = object.spec.metrics as { providers: unknown; overrides: { match: unknown; tagOverrides: Record<string, { value: string }> }[] }[];
    expect(metrics[0]!.providers).toEqual([{ name: 'prometheus' }]);
    expect(metrics[0]!.overrides.map((o) => o.match)).toEqual([
      { metric: 'REQUEST_COUNT', mode: 'CLIENT' },
      { metric: 'REQUEST_DURATION', mode: 'CLIENT' },
    ]);
    expect(Object.keys(metrics[0]!.overrides[0]!.tagOverrides)).toEqual(['vps', 'vps_country']);
  });

  it('uses targetRefs instead of the selector for Gateway API gateways', () => {
    const { object } = renderTelemetry({ ...OPTIONS, targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'public' }] }, fleetOf(1));
    expect(object.spec.targetRefs).toEqual([{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'public' }]);
    expect(object.spec.selector).toBeUndefined();
  });

  it('changes its digest with the mapping and only with it', () => {
    const fleet = fleetOf(10);
    expect(renderTelemetry(OPTIONS, [...fleet].reverse()).digest).toBe(renderTelemetry(OPTIONS, fleet).digest);
    expect(renderTelemetry(OPTIONS, fleet.map((v, i) => (i === 0 ? { ...v, country: 'us' } : v))).digest).not.toBe(renderTelemetry(OPTIONS, fleet).digest);
  });

  it('counts as ours only a Telemetry with our managed-by label', () => {
    expect(isManagedTelemetry({ metadata: { labels: { 'app.kubernetes.io/managed-by': 'edge-registrar' } } })).toBe(true);
    expect(isManagedTelemetry({ metadata: { labels: { 'app.kubernetes.io/managed-by': 'Helm' } } })).toBe(false);
    expect(isManagedTelemetry({})).toBe(false);
  });
});

describe('the source identity overrides (Kiali)', () => {
  const identity = { namespace: 'airport-prod', app: 'xrayr', version: 'v1' };
  const overridesOf = (rendered: ReturnType<typeof renderTelemetry>) => {
    const spec = rendered.object.spec as { metrics: { overrides: { tagOverrides: Record<string, { value: string }> }[] }[] };
    return spec.metrics[0]!.overrides[0]!.tagOverrides;
  };

  it('are off by default: no standard tag is touched', () => {
    const rendered = renderTelemetry(OPTIONS, fleetOf(10));
    expect(rendered.sourceIdentity).toEqual({ state: 'off' });
    expect(Object.keys(overridesOf(rendered)).sort()).toEqual(['vps', 'vps_country']);
  });

  it("override Istio's six source tags, each holding the whole fleet, with the gateway's own node metadata for everyone else", () => {
    const fleet = fleetOf(50);
    const rendered = renderTelemetry({ ...OPTIONS, sourceIdentity: identity }, fleet);
    expect(rendered.sourceIdentity).toEqual({ state: 'on' });
    const overrides = overridesOf(rendered);
    expect(Object.keys(overrides).sort()).toEqual(['vps', 'vps_country', ...SOURCE_IDENTITY_TAGS].sort());
    for (const tag of SOURCE_IDENTITY_TAGS) {
      const expression = overrides[tag]!.value;
      for (const v of fleet) expect(expression).toContain(celString(envoyAddressForm(v.address)!));
      expect(expression).toContain('node.metadata');
    }
    expect(overrides['source_workload']!.value).toContain(`${celString(envoyAddressForm(fleet[0]!.address)!)}:'vps-jp-1000'`);
    expect(overrides['source_workload']!.value).toMatch(/'WORKLOAD_NAME' in node\.metadata\?node\.metadata\['WORKLOAD_NAME'\]:''\)\[0\]$/);
    expect(overrides['source_workload_namespace']!.value).toContain("?'airport-prod':");
    expect(overrides['source_canonical_service']!.value).toContain("'service.istio.io/canonical-name' in node.metadata['LABELS']");
    expect(overrides['source_canonical_revision']!.value).toContain("?'v1':");
  });

  it('are refused, and the VPS tags kept, when the fleet passes the budget of one expression', () => {
    const rendered = renderTelemetry({ ...OPTIONS, sourceIdentity: identity, maxExpressionCodepoints: 20_000 }, fleetOf(2_000));
    expect(rendered.sourceIdentity).toMatchObject({ state: 'refused', reason: expect.stringMatching(/source_workload: 2000 VPSs need an expression of \d+ codepoints, over the limit of 20000; a standard tag cannot be split/) });
    const tags = Object.keys(overridesOf(rendered));
    expect(tags).toContain('vps');
    expect(tags.filter((t) => t.startsWith('source_'))).toEqual([]);
  });
});

describe('the sync configuration of the Telemetry', () => {
  const base = { redisUrl: 'redis://127.0.0.1:6379' };

  it('is off by default, with the gateway defaults', () => {
    expect(syncConfig(base, {}, 'c').telemetry).toEqual({ enabled: false, namespace: 'istio-system', name: 'edge-registrar-vps', selector: { istio: 'ingressgateway' }, targetRefs: [], metrics: ['REQUEST_COUNT', 'REQUEST_DURATION'], sourceIdentity: false, coalesceMs: 2000, maxExpressionCodepoints: 40000, maxObjectBytes: 1400000 });
  });

  it('reads flags over environment variables', () => {
    const config = syncConfig({ ...base, telemetry: true, telemetrySelector: 'app=gw,istio=public' }, { EDGE_REGISTRAR_TELEMETRY_METRICS: 'REQUEST_SIZE', EDGE_REGISTRAR_TELEMETRY_MAX_OBJECT_BYTES: '900000', EDGE_REGISTRAR_TELEMETRY_SELECTOR: 'ignored=1', EDGE_REGISTRAR_TELEMETRY_TARGET_REFS: 'gateway.networking.k8s.io/Gateway/public' }, 'c');
    expect(config.telemetry).toMatchObject({ enabled: true, selector: { app: 'gw', istio: 'public' }, metrics: ['REQUEST_SIZE'], maxObjectBytes: 900_000, targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'public' }] });
    expect(syncConfig(base, { EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY: 'true' }, 'c').telemetry.sourceIdentity).toBe(true);
  });

  it.each([
    [{ telemetryMetrics: 'REQUEST_COUNT,REQUESTS' }, /--telemetry-metrics \/ EDGE_REGISTRAR_TELEMETRY_METRICS/],
    // The tags read request headers: TCP metrics would only say "unknown"; ALL_METRICS is all ten.
    [{ telemetryMetrics: 'ALL_METRICS' }, /--telemetry-metrics .*must be one of REQUEST_COUNT, .* \(the tags read request headers: not TCP metrics, not ALL_METRICS\)/],
    [{ telemetryMetrics: 'TCP_SENT_BYTES' }, /--telemetry-metrics .*not TCP metrics/],
    [{ telemetryMetrics: 'REQUEST_COUNT,REQUEST_COUNT' }, /--telemetry-metrics .*names a metric twice/],
    [{ telemetryMaxExpressionCodepoints: '200000' }, /--telemetry-max-expression-codepoints \/ EDGE_REGISTRAR_TELEMETRY_MAX_EXPRESSION_CODEPOINTS/],
    [{ telemetrySelector: 'istio' }, /--telemetry-selector \/ EDGE_REGISTRAR_TELEMETRY_SELECTOR: "istio" is not KEY=VALUE/],
    [{ telemetryTargetRefs: 'Gateway/public' }, /--telemetry-target-refs .*is not GROUP\/KIND\/NAME/],
    [{ telemetryNamespace: 'Istio_System' }, /--telemetry-namespace \/ EDGE_REGISTRAR_TELEMETRY_NAMESPACE: must be a DNS label/],
  ])('names the flag, the value and the rule for %j', (flags, message) => {
    expect(() => syncConfig({ ...base, ...flags }, {}, 'c')).toThrow(message);
  });
});
