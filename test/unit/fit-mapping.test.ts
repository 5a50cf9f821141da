/**
 * Which VPSs the Telemetry keeps when the whole fleet does not fit (src/mesh-telemetry/fit-mapping.ts),
 * and the Telemetry it then renders: a mapping of the fleet as it is now, so a retired VPS is never
 * named and an address handed on is never counted as its previous holder.
 */
import { describe, expect, it } from 'vitest';
import { largestFittingPrefix, mappedIdentities, mappingOrder, type FleetMember } from '../../src/mesh-telemetry/fit-mapping.ts';
import { renderTelemetry, DEFAULT_TELEMETRY_OPTIONS, UNMAPPED_ANNOTATION, VPS_COUNT_ANNOTATION } from '../../src/mesh-telemetry/telemetry-object.ts';

const vps = (vpsId: string, streamId: string, address = `45.0.0.${vpsId.slice(1)}`): FleetMember => ({ vpsId, name: `vps-jp-${vpsId.slice(1)}`, address, country: 'jp', streamId });

describe('mappingOrder', () => {
  it('keeps the VPSs of the last mapping first, at their address now, then the rest oldest event first', () => {
    const fleet = [vps('v5', '1700000000500-0'), vps('v1', '1700000000100-0', '45.9.9.9'), vps('v3', '1700000000300-0'), vps('v2', '1700000000200-1'), vps('v4', '1700000000200-0')];
    // v1 moved (its address and stream id are new) but was mapped: it stays ahead of every newcomer.
    const ordered = mappingOrder(fleet, new Set(['v1', 'v3']));
    expect(ordered.map((v) => v.vpsId)).toEqual(['v1', 'v3', 'v4', 'v2', 'v5']);
    expect(ordered[0]?.address).toBe('45.9.9.9');
  });

  it('with no mapping written yet, orders the whole fleet by stream id (milliseconds, then sequence), as Redis does', () => {
    const fleet = [vps('v1', '1700000000100-10'), vps('v2', '1700000000100-9'), vps('v3', '999999999999-0')];
    expect(mappingOrder(fleet, undefined).map((v) => v.vpsId)).toEqual(['v3', 'v2', 'v1']);
  });

  it('names a VPS without a vps id by its name (a fleet given without them keeps its order)', () => {
    const fleet: FleetMember[] = [{ name: 'b', address: '45.0.0.2', country: 'jp' }, { name: 'a', address: '45.0.0.1', country: 'jp' }];
    expect(mappingOrder(fleet, new Set(['a'])).map((v) => v.name)).toEqual(['a', 'b']);
    expect([...mappedIdentities(fleet)]).toEqual(['b', 'a']);
  });
});

describe('largestFittingPrefix', () => {
  it.each([
    [1000, 737, 10],
    [1000, 737, 737],
    [1000, 737, 999],
    [1000, 0, 500],
    [2, 1, 1],
    [1000, 999, 1],
  ])('n %i, the limit at %i, guess %i', async (n, limit, guess) => {
    const items = Array.from({ length: n }, (_, i) => i);
    let renders = 0;
    const found = await largestFittingPrefix(items, (prefix) => { renders++; return prefix.length <= limit; }, guess);
    expect(found).toBe(limit);
    expect(renders).toBeLessThanOrEqual(Math.ceil(Math.log2(n)) + 1);
  });
});

describe('the Telemetry over its limit', () => {
  it('says how many VPSs it leaves out beside how many it maps (doctor and status read both)', () => {
    const options = { ...DEFAULT_TELEMETRY_OPTIONS, namespace: 'istio-system', name: 'edge-registrar-vps', selector: { istio: 'ingressgateway' }, targetRefs: [] };
    const kept = [vps('v1', '1-0'), vps('v3', '3-0')];
    const rendered = renderTelemetry(options, kept, 1);
    expect(rendered.object.metadata.annotations).toMatchObject({ [VPS_COUNT_ANNOTATION]: '2', [UNMAPPED_ANNOTATION]: '1' });
    expect(renderTelemetry(options, kept).object.metadata.annotations[UNMAPPED_ANNOTATION]).toBe('0');
  });
});
