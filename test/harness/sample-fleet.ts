/** A fleet shaped like the real one, for the Telemetry's tests and its benchmark. */
import type { MappedVps } from '../../src/mesh-telemetry/tag-expressions.ts';

const COUNTRIES = ['jp', 'sg', 'us', 'hk', 'de'] as const;

/**
 * `n` VPSs named vps-<country>-<n>, a fifth of them on IPv6 (written in a non-canonical form),
 * every address distinct; `{ ipv6: false }` for an IPv4-only fleet.
 */
export function sampleFleet(n: number, { ipv6 = true }: { ipv6?: boolean } = {}): MappedVps[] {
  return Array.from({ length: n }, (_, i) => {
    const country = COUNTRIES[i % COUNTRIES.length] ?? 'jp';
    return {
      name: `vps-${country}-${1000 + i}`,
      country,
      address: ipv6 && i % 5 === 4 ? `2400:cb00:${(i >> 8).toString(16)}::${(i & 255).toString(16)}` : `${45 + (i % 150)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 250)}`,
    };
  });
}
