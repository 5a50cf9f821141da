/** The managed Telemetry's rendering: pure, deterministic, within the expression budget. */
import { describe, expect, it } from 'vitest';
import { syncConfig } from '../../src/config.ts';
import { celString, envoyAddressForm, renderTagExpressions, TagRenderError, type MappedVps } from '../../src/mesh-telemetry/tag-expressions.ts';
import { DEFAULT_TELEMETRY_OPTIONS, isManagedTelemetry, renderTelemetry } from '../../src/mesh-telemetry/telemetry-object.ts';

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
    expect(only!.expression.startsWith("'x-envoy-external-address' in request.headers?")).toBe(true);
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

describe('the sync configuration of the Telemetry', () => {
  const base = { redisUrl: 'redis://127.0.0.1:6379' };

  it('is off by default, with the gateway defaults', () => {
    expect(syncConfig(base, {}, 'c').telemetry).toEqual({ enabled: false, namespace: 'istio-system', name: 'edge-registrar-vps', selector: { istio: 'ingressgateway' }, targetRefs: [], metrics: ['REQUEST_COUNT', 'REQUEST_DURATION'], coalesceMs: 2000 });
  });

  it('reads flags over environment variables', () => {
    const config = syncConfig({ ...base, telemetry: true, telemetrySelector: 'app=gw,istio=public' }, { EDGE_REGISTRAR_TELEMETRY_METRICS: 'ALL_METRICS', EDGE_REGISTRAR_TELEMETRY_SELECTOR: 'ignored=1', EDGE_REGISTRAR_TELEMETRY_TARGET_REFS: 'gateway.networking.k8s.io/Gateway/public' }, 'c');
    expect(config.telemetry).toMatchObject({ enabled: true, selector: { app: 'gw', istio: 'public' }, metrics: ['ALL_METRICS'], targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'public' }] });
  });

  it.each([
    [{ telemetryMetrics: 'REQUEST_COUNT,REQUESTS' }, /--telemetry-metrics \/ EDGE_REGISTRAR_TELEMETRY_METRICS/],
    [{ telemetrySelector: 'istio' }, /--telemetry-selector \/ EDGE_REGISTRAR_TELEMETRY_SELECTOR: "istio" is not KEY=VALUE/],
    [{ telemetryTargetRefs: 'Gateway/public' }, /--telemetry-target-refs .*is not GROUP\/KIND\/NAME/],
    [{ telemetryNamespace: 'Istio_System' }, /--telemetry-namespace \/ EDGE_REGISTRAR_TELEMETRY_NAMESPACE: must be a DNS label/],
  ])('names the flag, the value and the rule for %j', (flags, message) => {
    expect(() => syncConfig({ ...base, ...flags }, {}, 'c')).toThrow(message);
  });
});
