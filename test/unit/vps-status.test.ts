/** Whether the managed Telemetry attributes a VPS's address, read back from the object as written. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TELEMETRY_OPTIONS, renderTelemetry } from '../../src/mesh-telemetry/telemetry-object.ts';
import { attributes, describeStatus, needsAttention, type VpsStatus } from '../../src/status/vps-status.ts';
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

  it('says why a VPS is not mapped when the Telemetry leaves out the newest registrations (over its limit)', () => {
    const fleet = sampleFleet(3);
    const { object } = renderTelemetry(OPTIONS, fleet.slice(0, 2), 1);
    expect(attributes(object, 'vps', fleet[2]!.address, fleet[2]!.name)).toEqual({ attributed: false, detail: expect.stringContaining('the whole fleet would pass the Telemetry\'s limit, so it leaves out the 1 newest registrations, this one among them') as string });
  });
});

describe('describeStatus', () => {
  const deadLettered: VpsStatus = {
    vpsId: 'v3',
    desired: { state: 'unknown' },
    entry: { exists: false, name: 'vps-jp-03' },
    lastOutcome: { id: '9-0', source_id: '8-0', vps_id: 'v3', event: 'register', outcome: 'dead-lettered', name: 'vps-jp-03', rule: 'address.public-unicast', reason: '[address.public-unicast] spec.address: "10.0.0.3" is in the private (RFC 1918) range 10.0.0.0/8; expected a public unicast IPv4 or IPv6 address, e.g. 103.21.244.10', dlq_id: '8-5', at: '2026-12-07T00:00:00.000Z' },
    telemetry: { checked: false, reason: 'per-VPS metrics are off' },
  };

  it('a VPS whose only event was dead-lettered: says so, with the rule once, the reason and the dead letter, and needs attention', () => {
    const text = describeStatus(deadLettered);
    expect(text).toContain('desired:   none: no event of this VPS has taken effect (its last one was dead-lettered, below)');
    expect(text).toContain('outcome:   dead-lettered (event 8-0, register, at 2026-12-07T00:00:00.000Z; outcome record 9-0): [address.public-unicast] spec.address: "10.0.0.3"');
    expect(text).not.toContain('[address.public-unicast]: [address.public-unicast]');
    expect(text).toContain('dead letter: 8-5 (edge-registrar dlq show 8-5');
    expect(needsAttention(deadLettered)).toBe(true);
  });

  it('keeps the rule where the reason does not start with it', () => {
    const poison = { ...deadLettered, lastOutcome: { ...deadLettered.lastOutcome!, rule: 'event.poison', reason: 'a daemon started applying it 5 times' } };
    expect(describeStatus(poison)).toContain('[event.poison]: a daemon started applying it 5 times');
  });

  it('a registered VPS whose last event applied needs nothing', () => {
    const fine: VpsStatus = { ...deadLettered, desired: { state: 'registered', name: 'vps-jp-03' }, lastOutcome: { ...deadLettered.lastOutcome!, outcome: 'applied' } };
    expect(needsAttention(fine)).toBe(false);
    expect(needsAttention({ ...fine, lastOutcome: deadLettered.lastOutcome })).toBe(true);
  });
});
