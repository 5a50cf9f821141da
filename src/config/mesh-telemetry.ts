/**
 * The managed Istio Telemetry's settings (`sync --telemetry`, and `doctor` / `status`, which read it).
 */
import { z } from 'zod';
import { TAGGABLE_ISTIO_METRICS } from '../mesh-telemetry/istio-metrics.ts';
import { dnsLabel } from './common.ts';
import { ENV, type Env, parseBoolean } from './env.ts';

/** `k=v,k=v`: a label selector's matchLabels. */
const labelMap = z.string().transform((text, ctx) => {
  const labels: Record<string, string> = {};
  for (const pair of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) {
      ctx.addIssue({ code: 'custom', message: `"${pair}" is not KEY=VALUE` });
      return z.NEVER;
    }
    labels[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return labels;
});

/** `group/Kind/name,...`: Gateway API targetRefs (group may be empty for the core group). */
const targetRefList = z.string().transform((text, ctx) => {
  const refs: { group: string; kind: string; name: string }[] = [];
  for (const item of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const parts = item.split('/');
    const [group = '', kind = '', name = ''] = parts;
    if (parts.length !== 3 || kind === '' || name === '') {
      ctx.addIssue({ code: 'custom', message: `"${item}" is not GROUP/KIND/NAME (for example gateway.networking.k8s.io/Gateway/public)` });
      return z.NEVER;
    }
    refs.push({ group, kind, name });
  }
  return refs;
});

/**
 * The managed Telemetry on the ingress gateway (per-VPS metric tags); off unless enabled.
 * Defaults: Istio's gateway in istio-system, request count and duration.
 */
export const telemetrySchema = z.object({
  enabled: z.boolean().default(false),
  namespace: dnsLabel.default('istio-system'),
  name: dnsLabel.default('edge-registrar-vps'),
  selector: labelMap.default({ istio: 'ingressgateway' }),
  targetRefs: targetRefList.default([]),
  /**
   * Istio's HTTP metrics, each at most once: the tags read request headers, so TCP metrics
   * would only ever say "unknown", and ALL_METRICS is expanded by istiod into all ten. Every
   * metric carries its own copy of the tags, in the object and in the gateway's listener.
   */
  metrics: z
    .string()
    .transform((text) => text.split(',').map((m) => m.trim()).filter((m) => m !== ''))
    .pipe(
      z
        .array(z.enum(TAGGABLE_ISTIO_METRICS, { error: `must be one of ${TAGGABLE_ISTIO_METRICS.join(', ')} (the tags read request headers: not TCP metrics, not ALL_METRICS)` }))
        .min(1)
        .max(TAGGABLE_ISTIO_METRICS.length)
        .refine((list) => new Set(list).size === list.length, { message: 'names a metric twice' }),
    )
    .default(['REQUEST_COUNT', 'REQUEST_DURATION']),
  /** The longest CEL expression written (Envoy's parser refuses over 100,000 codepoints and the tag is then dropped). */
  maxExpressionCodepoints: z.coerce.number().int().min(1_000).max(95_000).default(40_000),
  /** The largest Telemetry written, in bytes of JSON (etcd refuses an object over 1.5 MiB; the API server adds metadata). */
  maxObjectBytes: z.coerce.number().int().min(10_000).max(1_500_000).default(1_400_000),
  /**
   * Istio's source tags (source_workload, _namespace, _app, _version, _canonical_service and
   * _revision) name a registered VPS's entry for its requests, so Kiali draws each VPS → Xboard.
   */
  sourceIdentity: z.boolean().default(false),
  /** A change to the fleet reaches the Telemetry after this long, so a burst is one write. */
  coalesceMs: z.number().int().positive().default(2_000),
});

/** The flags both the sync daemon and doctor take to find the gateway and the managed Telemetry. */
export interface TelemetryGatewayFlags {
  telemetry?: boolean | undefined;
  telemetryNamespace?: string | undefined;
  telemetryName?: string | undefined;
  telemetrySelector?: string | undefined;
}

export function telemetryGatewayInput(flags: TelemetryGatewayFlags, env: Env): Record<string, unknown> {
  return {
    enabled: flags.telemetry ?? parseBoolean(env[ENV.telemetry]),
    namespace: flags.telemetryNamespace ?? env[ENV.telemetryNamespace],
    name: flags.telemetryName ?? env[ENV.telemetryName],
    selector: flags.telemetrySelector ?? env[ENV.telemetrySelector],
  };
}
