/**
 * Address parsing, classification and canonicalisation. Istio's peer-metadata discovery
 * indexes WorkloadEntries by IP string, so an entry is only useful when its address is a
 * bare IP literal, and "unique address" only means something after canonicalisation:
 * IPv6 in RFC 5952 form, IPv4-mapped IPv6 folded to the IPv4 it carries.
 *
 * Which ranges are special comes from ipaddr.js (IANA special-purpose registries); the only
 * table here names the sub-ranges of ipaddr's catch-all `reserved` class so a denial can
 * say "documentation (TEST-NET-3)" instead of just "reserved".
 */
import ipaddr from 'ipaddr.js';

export type ParsedAddress =
  | { ok: true; ip: ipaddr.IPv4 | ipaddr.IPv6; canonical: string; family: 4 | 6 }
  | { ok: false; problem: string };

/** Hints for the shapes people actually type instead of an IP literal. */
function notAnIpProblem(value: string): string {
  if (value.length === 0) return 'is empty';
  if (value.startsWith('unix://')) return 'is a unix socket path, not an IP address';
  if (value.includes('/')) return 'has a prefix length; an address is a single IP, not a CIDR';
  if (value.startsWith('[')) return 'is in brackets; write the bare IPv6 address';
  if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(value)) return 'has a port; write the bare IP address';
  if (/\s/.test(value)) return 'contains white space';
  if (/^[a-z0-9.-]+$/i.test(value) && /[a-z]/i.test(value)) return 'is a hostname; Istio matches WorkloadEntries by IP only';
  return 'is not an IP address';
}

const AMBIGUOUS_IPV4 = 'an ambiguous IPv4 form (leading zeros, hex or fewer than four parts)';

export function parseAddress(value: string): ParsedAddress {
  if (ipaddr.IPv4.isValidFourPartDecimal(value)) {
    const ip = ipaddr.IPv4.parse(value);
    return { ok: true, ip, canonical: ip.toString(), family: 4 };
  }
  if (ipaddr.IPv4.isValid(value)) {
    // ipaddr accepts octal, hex and short forms ("010.1", "0x7f.1"); Kubernetes rejects them
    // as ambiguous and so do we.
    return { ok: false, problem: `is ${AMBIGUOUS_IPV4}` };
  }
  if (ipaddr.IPv6.isValid(value)) {
    // The dotted tail of an IPv6 literal (::ffff:8.8.8.8) goes through the same lenient IPv4
    // parser: "::ffff:0x8.8.8.8" and "::ffff:8.8.8.010" would fold to an IPv4 address that
    // the same digits written plainly are refused as. Refused the same way here.
    const dottedTail = value.includes('.') ? value.slice(value.lastIndexOf(':') + 1) : undefined;
    if (dottedTail !== undefined && !ipaddr.IPv4.isValidFourPartDecimal(dottedTail)) {
      return { ok: false, problem: `embeds ${JSON.stringify(dottedTail)}, ${AMBIGUOUS_IPV4}` };
    }
    const ip = ipaddr.IPv6.parse(value);
    if (ip.zoneId !== undefined) return { ok: false, problem: 'has an IPv6 zone id, which only means something on one host' };
    if (ip.isIPv4MappedAddress()) {
      // ::ffff:a.b.c.d names the IPv4 address; compare and store it as that.
      const v4 = ip.toIPv4Address();
      return { ok: true, ip: v4, canonical: v4.toString(), family: 4 };
    }
    return { ok: true, ip, canonical: ip.toRFC5952String(), family: 6 };
  }
  return { ok: false, problem: notAnIpProblem(value) };
}

/** Human names for ipaddr.js range classes. */
const RANGE_NAMES: Record<string, string> = {
  unspecified: 'unspecified',
  broadcast: 'broadcast',
  multicast: 'multicast',
  linkLocal: 'link-local',
  loopback: 'loopback',
  carrierGradeNat: 'carrier-grade NAT (RFC 6598)',
  private: 'private (RFC 1918)',
  reserved: 'reserved',
  as112: 'AS112 DNS service',
  amt: 'AMT relay anycast',
  uniqueLocal: 'unique-local (IPv6 ULA)',
  ipv4Mapped: 'IPv4-mapped',
  deprecatedSiteLocal: 'deprecated site-local',
  discard: 'discard-only',
  rfc6145: 'IPv4-translated (RFC 6145)',
  rfc6052: 'NAT64 (RFC 6052)',
  '6to4': '6to4 relay',
  teredo: 'Teredo',
  benchmarking: 'benchmarking',
  as112v6: 'AS112 DNS service',
  deprecatedOrchid: 'deprecated ORCHID',
  orchid2: 'ORCHIDv2',
  droneRemoteIdProtocolEntityTags: 'drone remote ID tags',
  segmentRouting: 'segment routing SIDs',
};

/** Sub-ranges of ipaddr's `reserved` class, by the CIDR ipaddr reports. */
const RESERVED_DETAIL: Record<string, string> = {
  '192.0.0.0/24': 'IETF protocol assignments',
  '192.0.2.0/24': 'documentation (TEST-NET-1)',
  '192.88.99.0/24': 'deprecated 6to4 relay anycast',
  '198.18.0.0/15': 'benchmarking (RFC 2544)',
  '198.51.100.0/24': 'documentation (TEST-NET-2)',
  '203.0.113.0/24': 'documentation (TEST-NET-3)',
  '240.0.0.0/4': 'reserved for future use',
  '2001::/23': 'IETF protocol assignments',
  '2001:db8::/32': 'documentation',
  '3fff::/20': 'documentation',
};

type RangeEntry = [ipaddr.IPv4 | ipaddr.IPv6, number];

function matchingCidr(ip: ipaddr.IPv4 | ipaddr.IPv6, rangeName: string): string | undefined {
  // ipaddr.js keeps its range table on the prototype without declaring it in its types.
  const proto = (ip.kind() === 'ipv4' ? ipaddr.IPv4.prototype : ipaddr.IPv6.prototype) as unknown as {
    SpecialRanges: Record<string, RangeEntry | RangeEntry[] | undefined>;
  };
  const raw = proto.SpecialRanges[rangeName];
  if (raw === undefined) return undefined;
  const entries: RangeEntry[] = Array.isArray(raw[0]) ? (raw as RangeEntry[]) : [raw as RangeEntry];
  for (const [network, bits] of entries) {
    if (network.kind() === ip.kind() && (ip as ipaddr.IPv4).match(network, bits)) {
      const base = network.kind() === 'ipv6' ? (network as ipaddr.IPv6).toRFC5952String() : network.toString();
      return `${base}/${bits}`;
    }
  }
  return undefined;
}

/** IANA's global unicast allocation; ipaddr calls anything unlisted "unicast", including unallocated space. */
const IPV6_GLOBAL_UNICAST = ipaddr.parseCIDR('2000::/3');

/**
 * Why this address is not public unicast, or undefined when it is. The answer names the
 * range and its CIDR, e.g. "is in the private (RFC 1918) range 10.0.0.0/8".
 */
export function nonPublicReason(ip: ipaddr.IPv4 | ipaddr.IPv6): string | undefined {
  const range = ip.range();
  if (range === 'unicast') {
    if (ip.kind() === 'ipv6' && !(ip as ipaddr.IPv6).match(IPV6_GLOBAL_UNICAST)) {
      return 'is outside IPv6 global unicast space 2000::/3';
    }
    return undefined;
  }
  const cidr = matchingCidr(ip, range);
  const detail = cidr !== undefined ? RESERVED_DETAIL[cidr] : undefined;
  const name = detail ?? RANGE_NAMES[range] ?? range;
  return cidr !== undefined ? `is in the ${name} range ${cidr}` : `is a ${name} address`;
}

export function cidrContains(cidr: string, ip: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  const [network, bits] = ipaddr.parseCIDR(cidr);
  const candidate = ip;
  let net: ipaddr.IPv4 | ipaddr.IPv6 = network;
  let prefix = bits;
  // Let an IPv4 CIDR written in mapped form (::ffff:203.0.113.0/120) match plain IPv4.
  if (net.kind() === 'ipv6' && (net as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    net = (net as ipaddr.IPv6).toIPv4Address();
    prefix = bits - 96;
  }
  if (candidate.kind() !== net.kind()) return false;
  // Same kind on both sides now; ipaddr's match() is typed per kind.
  return (candidate as ipaddr.IPv4).match(net, prefix);
}

/** The canonical form of an address string, or undefined when it is not an IP literal. */
export function canonicalAddress(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const parsed = parseAddress(value);
  return parsed.ok ? parsed.canonical : undefined;
}
