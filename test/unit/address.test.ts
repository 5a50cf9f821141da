import { describe, expect, it } from 'vitest';
import { canonicalAddress, cidrContains, nonPublicReason, parseAddress } from '../../src/policy/address.ts';

function reasonFor(address: string): string | undefined {
  const parsed = parseAddress(address);
  if (!parsed.ok) throw new Error(`${address} did not parse: ${parsed.problem}`);
  return nonPublicReason(parsed.ip);
}

describe('public unicast addresses are accepted', () => {
  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '103.21.244.10',
    '45.76.1.2',
    '2606:4700::1111',
    '2a01:4f8::1',
    '2001:4860:4860::8888',
    '::ffff:8.8.8.8', // IPv4-mapped form of a public address
  ])('%s', (address) => {
    expect(reasonFor(address)).toBeUndefined();
  });
});

describe('every special range is rejected, named with its CIDR', () => {
  it.each([
    ['10.1.2.3', 'private (RFC 1918) range 10.0.0.0/8'],
    ['172.16.0.1', 'private (RFC 1918) range 172.16.0.0/12'],
    ['192.168.1.1', 'private (RFC 1918) range 192.168.0.0/16'],
    ['127.0.0.1', 'loopback range 127.0.0.0/8'],
    ['169.254.169.254', 'link-local range 169.254.0.0/16'],
    ['100.64.0.1', 'carrier-grade NAT (RFC 6598) range 100.64.0.0/10'],
    ['100.127.255.254', 'carrier-grade NAT (RFC 6598) range 100.64.0.0/10'],
    ['224.0.0.1', 'multicast range 224.0.0.0/4'],
    ['239.255.255.250', 'multicast range 224.0.0.0/4'],
    ['240.0.0.1', 'reserved for future use range 240.0.0.0/4'],
    ['0.0.0.0', 'unspecified range 0.0.0.0/8'],
    ['255.255.255.255', 'broadcast range 255.255.255.255/32'],
    ['198.18.0.1', 'benchmarking (RFC 2544) range 198.18.0.0/15'],
    ['198.19.255.1', 'benchmarking (RFC 2544) range 198.18.0.0/15'],
    ['192.0.2.10', 'documentation (TEST-NET-1) range 192.0.2.0/24'],
    ['198.51.100.7', 'documentation (TEST-NET-2) range 198.51.100.0/24'],
    ['203.0.113.9', 'documentation (TEST-NET-3) range 203.0.113.0/24'],
    ['192.0.0.8', 'IETF protocol assignments range 192.0.0.0/24'],
    ['::1', 'loopback range ::1/128'],
    ['::', 'unspecified range ::/128'],
    ['fe80::1', 'link-local range fe80::/10'],
    ['fd12:3456::1', 'unique-local (IPv6 ULA) range fc00::/7'],
    ['fc00::1', 'unique-local (IPv6 ULA) range fc00::/7'],
    ['ff02::1', 'multicast range ff00::/8'],
    ['2001:db8::1', 'documentation range 2001:db8::/32'],
    ['3fff::1', 'documentation range 3fff::/20'],
    ['2001:2::1', 'benchmarking range 2001:2::/48'],
    ['64:ff9b::808:808', 'NAT64 (RFC 6052) range 64:ff9b::/96'],
    ['2002:c000:204::1', '6to4 relay range 2002::/16'],
    ['4000::1', 'outside IPv6 global unicast space 2000::/3'],
  ])('%s', (address, expected) => {
    expect(reasonFor(address)).toContain(expected);
  });

  it.each([
    ['::ffff:10.0.0.1', 'private (RFC 1918)'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:169.254.1.1', 'link-local'],
    ['::ffff:100.64.0.1', 'carrier-grade NAT'],
    ['::ffff:198.18.0.1', 'benchmarking'],
    ['::ffff:192.0.2.1', 'documentation'],
    ['::ffff:0.0.0.0', 'unspecified'],
    ['::ffff:224.0.0.1', 'multicast'],
  ])('IPv4-mapped %s is judged as the IPv4 it carries', (address, expected) => {
    expect(reasonFor(address)).toContain(expected);
  });
});

describe('only bare IP literals parse', () => {
  it.each([
    ['vps-jp-01.example.com', 'hostname'],
    ['localhost', 'hostname'],
    ['1.2.3.4:443', 'port'],
    ['[2606:4700::1111]', 'brackets'],
    ['1.2.3.4/32', 'prefix length'],
    ['unix:///var/run/sock', 'unix socket'],
    ['', 'empty'],
    [' 8.8.8.8', 'white space'],
    ['010.1.1.1', 'ambiguous'],
    ['0x08.8.8.8', 'ambiguous'],
    ['8.8.8', 'ambiguous'],
    // The same forms inside IPv6 (ipaddr.js parses the dotted tail leniently and would fold them).
    ['::ffff:0x8.8.8.8', 'ambiguous'],
    ['::ffff:8.8.8.010', 'ambiguous'],
    ['::ffff:010.8.8.8', 'ambiguous'],
    ['64:ff9b::08.8.8.8', 'ambiguous'],
    ['fe80::1%eth0', 'zone id'],
    ['1.2.3.256', 'not an IP'],
    ['2606:4700::1111::1', 'not an IP'],
  ])('%j is refused (%s)', (address, hint) => {
    const parsed = parseAddress(address);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.problem).toContain(hint);
  });
});

describe('canonical form (RFC 5952, mapped IPv4 folded)', () => {
  it.each([
    ['2606:4700:0:0:0:0:0:1111', '2606:4700::1111'],
    ['2606:4700:0000:0000:0000:0000:0000:1111', '2606:4700::1111'],
    ['2606:4700::1111', '2606:4700::1111'],
    ['2A01:4F8::1', '2a01:4f8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // longest run of zeros compressed, first on a tie
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['::ffff:8.8.8.8', '8.8.8.8'],
    ['::ffff:0808:0808', '8.8.8.8'],
    ['8.8.8.8', '8.8.8.8'],
  ])('%s → %s', (input, canonical) => {
    expect(canonicalAddress(input)).toBe(canonical);
  });

  it('is undefined for what is not an address', () => {
    expect(canonicalAddress('vps.example.com')).toBeUndefined();
    expect(canonicalAddress(42)).toBeUndefined();
  });
});

describe('CIDR membership', () => {
  it.each([
    ['203.0.113.0/24', '203.0.113.9', true],
    ['203.0.113.0/24', '203.0.114.9', false],
    ['2606:4700::/32', '2606:4700::1111', true],
    ['2606:4700::/32', '8.8.8.8', false],
    ['::ffff:8.8.8.0/120', '8.8.8.8', true],
  ])('%s contains %s: %s', (cidr, address, expected) => {
    const parsed = parseAddress(address);
    if (!parsed.ok) throw new Error('fixture');
    expect(cidrContains(cidr, parsed.ip)).toBe(expected);
  });
});
