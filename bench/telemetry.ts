/**
 * `npm run bench:telemetry`: the managed Telemetry at 100, 1,000 and 5,000 VPSs. For each: the
 * time to render it from the fleet (median of 5), the object's size, its shard tags and longest
 * expression against Envoy's 100,000-codepoint parser limit, and what istiod pushes to the
 * ingress gateway for it (the HTTP listener's serialized size, from Istio's own config
 * generation via meshview), beside the same gateway without the Telemetry in the same run.
 * Rows marked "+ source identity" have the Kiali option on (six more unsharded tags), at
 * sizes it holds. Then the largest fleet one Telemetry attributes with the chart's defaults,
 * by metrics tagged and fleet shape, and the limit that stops it.
 */
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { DEFAULT_TELEMETRY_OPTIONS, renderTelemetry } from '../src/mesh-telemetry/telemetry-object.ts';
import { isShardTagOf } from '../src/mesh-telemetry/tag-expressions.ts';
import { capture } from '../test/harness/capture.ts';
import { ensureIstioTools } from '../test/harness/istio-build.ts';
import { sampleFleet } from '../test/harness/sample-fleet.ts';
import { percentile, printTable } from './stats.ts';

const CASES = [
  { vps: 100, identity: false },
  { vps: 1_000, identity: false },
  { vps: 5_000, identity: false },
  { vps: 100, identity: true },
  { vps: 1_000, identity: true },
  { vps: 1_300, identity: true },
];
const IDENTITY = { namespace: 'airport-prod', app: 'xrayr', version: 'v1' };
const OPTIONS = { ...DEFAULT_TELEMETRY_OPTIONS, namespace: 'istio-system', name: 'edge-registrar-vps' };
const GATEWAY = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'Gateway',
  metadata: { name: 'xboard', namespace: 'airport-prod' },
  spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 8080, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
};
const GATEWAY_PROXY = { type: 'router', namespace: 'istio-system', labels: { istio: 'ingressgateway' }, id: 'istio-ingressgateway-bench' };

/** The serialized size of the gateway's HTTP listener as istiod builds it for `objects`. */
async function gatewayListenerBytes(meshview: string, objects: object[]): Promise<number> {
  const input = JSON.stringify({ objects: objects.map((o) => stringify(o)).join('\n---\n'), proxy: GATEWAY_PROXY });
  const res = await capture(meshview, [], { input });
  if (res.code !== 0) throw new Error(`meshview failed (${res.code}): ${res.stderr.slice(-2000)}`);
  const view = JSON.parse(res.stdout) as { listeners: { name: string; bytes: number }[] };
  const listener = view.listeners.find((l) => l.name === '0.0.0.0_8080');
  if (listener === undefined) throw new Error('the gateway has no 0.0.0.0_8080 listener');
  return listener.bytes;
}

const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;

async function main(): Promise<void> {
  const { meshview } = await ensureIstioTools();
  const without = await gatewayListenerBytes(meshview, [GATEWAY]);
  const rows: string[][] = [];
  for (const { vps: n, identity } of CASES) {
    const fleet = sampleFleet(n);
    const options = identity ? { ...OPTIONS, sourceIdentity: IDENTITY } : OPTIONS;
    const times: number[] = [];
    let rendered = renderTelemetry(options, fleet);
    if (identity && rendered.sourceIdentity.state !== 'on') throw new Error(`source identity at ${n} VPSs: ${JSON.stringify(rendered.sourceIdentity)}`);
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      rendered = renderTelemetry(options, fleet);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const withTelemetry = await gatewayListenerBytes(meshview, [GATEWAY, rendered.object]);
    const shardsOf = (base: string) => rendered.tags.filter((t) => isShardTagOf(t.tag, base)).length;
    const source = rendered.tags.filter((t) => t.tag.startsWith('source_')).length;
    const longest = Math.max(...rendered.tags.map((t) => t.expression.length));
    rows.push([
      `${n.toLocaleString('en')}${identity ? ' + source identity' : ''}`,
      `${percentile(times, 50).toFixed(1)} ms`,
      kib(Buffer.byteLength(JSON.stringify(rendered.object))),
      `${shardsOf(OPTIONS.vpsTag)} + ${shardsOf(OPTIONS.countryTag)}${source > 0 ? ` + ${source} source` : ''}`,
      `${longest.toLocaleString('en')} (${((longest / 100_000) * 100).toFixed(0)}% of the limit)`,
      kib(without),
      kib(withTelemetry),
    ]);
  }
  printTable(['VPSs', 'render (median of 5)', 'Telemetry object', 'tags (vps + country + source)', 'longest expression (codepoints)', 'gateway HTTP listener without', 'with the Telemetry'], rows);

  // The largest fleet one Telemetry attributes with the chart's defaults (40,000-codepoint
  // expressions, 1,400,000-byte object), by the number of metrics tagged and the fleet's shape,
  // and which limit stops it there.
  console.log('');
  const largest: string[][] = [];
  for (const ipv6 of [false, true]) {
    for (const metrics of [['REQUEST_COUNT'], ['REQUEST_COUNT', 'REQUEST_DURATION'], ['REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE']] as const) {
      const found = largestFleet({ ...OPTIONS, metrics: [...metrics] }, (n) => sampleFleet(n, { ipv6 }));
      largest.push([ipv6 ? 'a fifth on IPv6' : 'IPv4 only', `${metrics.length}${metrics.length === 2 ? ' (default)' : ''}`, found.vps.toLocaleString('en'), kib(found.bytes), found.stoppedBy]);
    }
  }
  printTable(['fleet', 'metrics tagged', 'largest fleet written', 'object at that size', 'what refuses one more (+100 VPSs)'], largest);
}

/** The largest fleet (to 100 VPSs) whose Telemetry renders within both limits, found by bisection. */
function largestFleet(options: typeof OPTIONS, fleetOf: (n: number) => ReturnType<typeof sampleFleet>): { vps: number; bytes: number; stoppedBy: string } {
  const attempt = (n: number): { ok: true; bytes: number } | { ok: false; why: string } => {
    try {
      const bytes = Buffer.byteLength(JSON.stringify(renderTelemetry(options, fleetOf(n)).object));
      return bytes <= options.maxObjectBytes ? { ok: true, bytes } : { ok: false, why: `object ${kib(bytes)} > ${kib(options.maxObjectBytes)}` };
    } catch (error) {
      return { ok: false, why: `expression budget (${(error as Error).message.replace(/^tag (\S+): .*need an expression of (\d+) codepoints.*$/, '$1: $2 codepoints')})` };
    }
  };
  let low = 1_000;
  let high = 40_000;
  while (high - low > 100) {
    const middle = Math.round((low + high) / 200) * 100;
    if (attempt(middle).ok) low = middle;
    else high = middle;
  }
  const fits = attempt(low);
  const next = attempt(low + 100);
  return { vps: low, bytes: fits.ok ? fits.bytes : 0, stoppedBy: next.ok ? 'nothing within 40,000' : next.why };
}

await main();
