/** Whether the managed Telemetry attributes a VPS's address, read back from the object as written. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TELEMETRY_OPTIONS, renderTelemetry } from '../../src/mesh-telemetry/telemetry-object.ts';
import { attributes } from '../../src/status/vps-status.ts';
import { sampleFleet } from '../harness/sample-fleet.ts';

const OPTIONS = { ...DEFAULT_TELEMETRY_OPTIONS, namespace: 'istio-system', name: 'edge-registrar-vps' };

describe('attributes', () => {
  it.each([1, 40, 5_000])('finds each VPS of a %i-VPS fleet in its vps tags, in whichever form its bucket is written', (n) => {
    const fleet = sampleFleet(n);
    const { object } = renderTelemetry(OPTIONS, fleet);
    for (const vps of fleet.filter((_, i) => i % Math.max(1, Math.floor(n / 20)) === 0)) {
      expect(attributes(object, 'vps', vps.address, vps.name)).toMatchObject({ attributed: true });
      // The same address under another name, or a stranger's address: not attributed.
      expect(attributes(object, 'vps', vps.address, 'vps-xx-0').attributed).toBe(false);
    }
    expect(attributes(object, 'vps', '203.0.113.250', fleet[0]!.name).attributed).toBe(false);
  });
});
