/**
 * The CEL expressions behind the per-VPS metric tags: each maps the trusted client address
 * the ingress gateway puts in `x-envoy-external-address` to a registered VPS's name (or
 * country), `unregistered` for any other caller and `none` when the gateway established no
 * client address, so a tag has one value per VPS plus two.
 *
 * Only an address Envoy wrote itself counts. Envoy writes `x-envoy-external-address` on an
 * external request (overwriting whatever the client sent) and leaves a client's value in
 * place on an internal one, which it marks `x-envoy-internal: true`; it removes a client's
 * own `x-envoy-internal` from every request (Envoy 1.39, conn_manager_utility.cc; see
 * docs/attribution.md). So a request carrying `x-envoy-internal` is never attributed: a pod
 * the gateway counts as internal cannot name a VPS by sending its address.
 *
 * The limits that shape them (Envoy's istio.stats filter parses each expression with cel-cpp's
 * default ParserOptions and evaluates every one of them on every request, without constant
 * folding):
 * - an expression over 100,000 codepoints does not parse, and the filter then drops the tag
 *   silently (it logs "Failed to parse expression" at info level). Each expression is kept
 *   under `maxCodepoints` (40,000 by default); a fleet too large for one is split by the
 *   address's last character across shard tags `<tag>`, `<tag>_1`, `<tag>_2` ..., each of which
 *   is empty ("") for addresses another shard owns, so exactly one of them names the caller;
 * - parser nesting is limited to depth 250: the chain of conditionals is at most 18 deep;
 * - a map literal is built on every evaluation: the addresses are bucketed by their last
 *   character and only the caller's bucket's map is built, about a tenth of the fleet.
 * Pure: no I/O.
 */
import { parseAddress } from '../policy/address.ts';

/** The header the gateway derives from the PROXY protocol when numTrustedProxies is 0. */
export const CLIENT_ADDRESS_HEADER = 'x-envoy-external-address';
/** The header Envoy sets on a request it counts as internal, whose client address header is then the client's own. */
export const INTERNAL_REQUEST_HEADER = 'x-envoy-internal';
/** Values a tag takes besides the VPS names. */
export const UNREGISTERED = 'unregistered';
export const NO_HEADER = 'none';
/**
 * Shard tags per dimension at most: one per bucket (a shard holds whole buckets). The
 * Prometheus rules (charts/edge-registrar/files/per-vps-rules.yaml) merge this many. With
 * about 1,300 VPSs per bucket under the default budget, that is about 13,000 VPSs.
 */
export const MAX_SHARD_TAGS = 17;
/** Half of cel-cpp's parser limit (kExpressionSizeCodepointLimit = 100,000). */
export const DEFAULT_MAX_CODEPOINTS = 40_000;
/** The last character of an address as Envoy writes it: a decimal digit (IPv4), a lower-case hex digit or ':' (IPv6 ending in "::"). */
const BUCKETS = [...'0123456789abcdef:'];
if (BUCKETS.length !== MAX_SHARD_TAGS) throw new Error('a shard tag per bucket at most');

export interface MappedVps {
  name: string;
  address: string;
  country: string;
}

export interface TagExpression {
  /** The tag's name: `<tag>` for the first shard, `<tag>_<n>` for further ones. */
  tag: string;
  expression: string;
  /** Registered addresses this expression maps. */
  entries: number;
}

/** Whether `tag` is one of the shard tags of `base`: `base` itself or `<base>_<n>` (so vps_country is not vps's). */
export function isShardTagOf(tag: string, base: string): boolean {
  return tag === base || (tag.startsWith(`${base}_`) && /^\d+$/.test(tag.slice(base.length + 1)));
}

export class TagRenderError extends Error {
  override name = 'TagRenderError';
}

/** A CEL string literal. Names and addresses are validated upstream; quoting stays correct anyway. */
export function celString(value: string): string {
  let out = '';
  for (const c of value) {
    const code = c.charCodeAt(0);
    if (c === '\\' || c === "'") out += `\\${c}`;
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += c;
  }
  return `'${out}'`;
}

/** An address in the form Envoy writes it into the header (dotted quad, or RFC 5952 IPv6); undefined when it is no IP. */
export function envoyAddressForm(address: string): string | undefined {
  const parsed = parseAddress(address);
  return parsed.ok ? parsed.canonical : undefined;
}

function codepoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** The lookup of the bound address `a` in one bucket's map, or `miss` (a CEL expression). */
function bucketLookup(entries: readonly [string, string][], miss: string): string {
  if (entries.length === 0) return miss;
  const shared = entries[0]?.[1];
  if (shared !== undefined && entries.every(([, value]) => value === shared)) {
    // One value for the whole bucket (a namespace, an app): a set of addresses is enough, and
    // about half the size, which is what lets one expression per standard tag hold the fleet.
    return `(a in {${entries.map(([key]) => `${celString(key)}:0`).join(',')}}?${celString(shared)}:${miss})`;
  }
  const literal = entries.map(([key, value]) => `${celString(key)}:${celString(value)}`).join(',');
  // [M].map(m, ...)[0] binds the map literal to m once, so it is written (and built) once.
  return `[{${literal}}].map(m,a in m?m[a]:${miss})[0]`;
}

function endsWithAny(chars: readonly string[]): string {
  return chars.map((c) => `a.endsWith(${celString(c)})`).join('||');
}

/**
 * One shard's expression: a lookup for each of its buckets that holds VPSs, then `fallback`
 * for every other address, and `absent` when there is no header (both CEL expressions).
 */
function shardExpression(buckets: readonly string[], lookups: ReadonlyMap<string, string>, fallback: string, absent: string): string {
  let chain = fallback;
  for (const bucket of [...buckets].reverse()) {
    const lookup = lookups.get(bucket);
    if (lookup !== undefined) chain = `${lookup}${chain}`;
  }
  const header = celString(CLIENT_ADDRESS_HEADER);
  const internal = celString(INTERNAL_REQUEST_HEADER);
  return `${header} in request.headers&&!(${internal} in request.headers)?[request.headers[${header}]].map(a,${chain})[0]:${absent}`;
}

/**
 * What a shard says for an address none of its lookups matched: exactly one shard says
 * `unregistered` for it (the one owning its last character, the first shard for a header
 * that is no address), every other shard says "".
 */
function shardFallback(index: number, buckets: readonly string[], shards: readonly (readonly string[])[]): string {
  const unregistered = celString(UNREGISTERED);
  if (shards.length === 1) return unregistered;
  if (index === 0) {
    const others = shards.slice(1).flat();
    return `${endsWithAny(others)}?'':${unregistered}`;
  }
  return `${endsWithAny(buckets)}?${unregistered}:''`;
}

/** The fleet's addresses by bucket, each bucket rendered once as a guarded lookup. */
function bucketLookups(fleet: readonly MappedVps[], valueOf: (vps: MappedVps) => string, miss: string): { byBucket: Map<string, [string, string][]>; lookups: Map<string, string> } {
  const byBucket = new Map<string, [string, string][]>();
  for (const vps of fleet) {
    const key = envoyAddressForm(vps.address);
    if (key === undefined) continue;
    const bucket = key.slice(-1);
    let entries = byBucket.get(bucket);
    if (entries === undefined) byBucket.set(bucket, (entries = []));
    entries.push([key, valueOf(vps)]);
  }
  const lookups = new Map<string, string>();
  for (const [bucket, entries] of byBucket) {
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    lookups.set(bucket, `${endsWithAny([bucket])}?${bucketLookup(entries, miss)}:`);
  }
  return { byBucket, lookups };
}

/**
 * The expressions for one tag whose value for a VPS is `valueOf(vps)`. VPSs with an address
 * that is no IP are left out (the webhook never admits them). Deterministic: the same fleet
 * gives the same text, so an unchanged fleet never causes a write.
 */
export function renderTagExpressions(tag: string, fleet: readonly MappedVps[], valueOf: (vps: MappedVps) => string, maxCodepoints = DEFAULT_MAX_CODEPOINTS): TagExpression[] {
  // Each bucket's lookup is rendered once; a shard's size is the sum of its buckets' plus a
  // fixed frame, so packing costs no re-rendering.
  const { byBucket, lookups } = bucketLookups(fleet, valueOf, celString(UNREGISTERED));
  const frame = codepoints(shardExpression([], lookups, '', '')) + 400; // 400: room for the fallback (about 300 at most)

  // Greedy packing in bucket order: a shard takes buckets while its expression stays within the limit.
  const shards: string[][] = [];
  let current: string[] = [];
  let size = frame;
  for (const bucket of BUCKETS) {
    const added = codepoints(lookups.get(bucket) ?? '');
    if (current.length > 0 && size + added > maxCodepoints) {
      shards.push(current);
      current = [];
      size = frame;
    }
    current.push(bucket);
    size += added;
  }
  shards.push(current);

  return shards.map((buckets, index) => {
    const expression = shardExpression(buckets, lookups, shardFallback(index, buckets, shards), index === 0 ? celString(NO_HEADER) : "''");
    const size = codepoints(expression);
    if (size > maxCodepoints) {
      throw new TagRenderError(`tag ${tag}: the addresses ending in "${buckets.join('')}" need an expression of ${size} codepoints, over the limit of ${maxCodepoints}; raise --telemetry-max-expression-codepoints (perVpsMetrics.telemetry.maxExpressionCodepoints; at most 95,000: Envoy parses up to 100,000) or shrink the fleet`);
    }
    return { tag: index === 0 ? tag : `${tag}_${index}`, expression, entries: buckets.reduce((n, b) => n + (byBucket.get(b)?.length ?? 0), 0) };
  });
}

/**
 * One expression for a tag that cannot be sharded, because it is one of Istio's standard tags
 * (there is one `source_workload`): a registered VPS's address gives `valueOf(vps)`; any other
 * request, with another address or none, gives `otherwise`, a CEL expression for what the tag
 * says without the override. A fleet too large for one expression is a TagRenderError.
 */
export function renderSingleExpression(tag: string, fleet: readonly MappedVps[], valueOf: (vps: MappedVps) => string, otherwise: string, maxCodepoints = DEFAULT_MAX_CODEPOINTS): TagExpression {
  // The lookups say '' for a miss (a value is never empty: names, namespaces and labels are
  // validated non-empty), and one binding turns '' into `otherwise`, written once.
  const { byBucket, lookups } = bucketLookups(fleet, valueOf, "''");
  const lookup = shardExpression(BUCKETS, lookups, "''", "''");
  const expression = `[${lookup}].map(v,v!=''?v:${otherwise})[0]`;
  const size = codepoints(expression);
  const entries = [...byBucket.values()].reduce((n, e) => n + e.length, 0);
  if (size > maxCodepoints) {
    throw new TagRenderError(`tag ${tag}: ${entries} VPSs need an expression of ${size} codepoints, over the limit of ${maxCodepoints}; a standard tag cannot be split across tags`);
  }
  return { tag, expression, entries };
}
