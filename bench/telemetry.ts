/**
 * `npm run bench:telemetry`: the managed Telemetry at 100, 1,000 and 5,000 VPSs. For each: the
 * time to render it from the fleet (median of 5), the object's size, its shard tags and longest
 * expression against Envoy's 100,000-codepoint parser limit, and what istiod pushes to the
 * ingress gateway for it (the HTTP listener's serialized size, from Istio's own config
 * generation via meshview), beside the same gateway without the Telemetry in the same run.
 * Rows marked "+ source identity" have the Kiali option on (six more unsharded tags), at
 * sizes it holds.
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
}

await main();
