/**
 * The only module that reads the environment. Each subcommand's configuration is built
 * here from its flags (which win) and environment variables (which fill in), validated
 * with zod, with defaults that fit the seeds. Errors name the flag or variable, the value
 * and the rule.
 */
import { z } from 'zod';
import { ISTIO_METRICS } from './mesh-telemetry/istio-metrics.ts';
import { redactSecrets } from './util/redact.ts';
import { formatPath } from './util/zod-format.ts';

export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Environment variables, one place, with what they set. */
export const ENV = {
  namespace: 'AIRPORT_NAMESPACE',
  kubeconfig: 'AIRPORT_KUBECONFIG',
  policy: 'EDGE_REGISTRAR_POLICY',
  logLevel: 'EDGE_REGISTRAR_LOG_LEVEL',
  port: 'EDGE_REGISTRAR_WEBHOOK_PORT',
  host: 'EDGE_REGISTRAR_WEBHOOK_HOST',
  tlsCert: 'EDGE_REGISTRAR_TLS_CERT',
  tlsKey: 'EDGE_REGISTRAR_TLS_KEY',
  metricsPort: 'EDGE_REGISTRAR_METRICS_PORT',
  istioApiVersion: 'EDGE_REGISTRAR_ISTIO_API_VERSION',
  shutdownDelay: 'EDGE_REGISTRAR_SHUTDOWN_DELAY_SECONDS',
  redisUrl: 'REDIS_URL',
  redisUsername: 'REDIS_USERNAME',
  redisPassword: 'REDIS_PASSWORD',
  redisTls: 'REDIS_TLS',
  redisTlsCaFile: 'REDIS_TLS_CA_FILE',
  redisSentinels: 'REDIS_SENTINELS',
  redisSentinelName: 'REDIS_SENTINEL_NAME',
  redisSentinelPassword: 'REDIS_SENTINEL_PASSWORD',
  stream: 'EDGE_REGISTRAR_STREAM',
  group: 'EDGE_REGISTRAR_GROUP',
  consumer: 'EDGE_REGISTRAR_CONSUMER',
  syncPort: 'EDGE_REGISTRAR_SYNC_PORT',
  orphanPolicy: 'EDGE_REGISTRAR_ORPHAN_POLICY',
  resyncInterval: 'EDGE_REGISTRAR_RESYNC_INTERVAL_SECONDS',
  orphanGrace: 'EDGE_REGISTRAR_ORPHAN_GRACE_SECONDS',
  leaseName: 'EDGE_REGISTRAR_LEASE_NAME',
  syncConcurrency: 'EDGE_REGISTRAR_SYNC_CONCURRENCY',
  maxAttempts: 'EDGE_REGISTRAR_MAX_ATTEMPTS',
  deadLetterMaxLength: 'EDGE_REGISTRAR_DLQ_MAX_LENGTH',
  certMode: 'EDGE_REGISTRAR_CERT_MODE',
  certSecret: 'EDGE_REGISTRAR_CERT_SECRET',
  certSecretNamespace: 'EDGE_REGISTRAR_CERT_SECRET_NAMESPACE',
  /** The Downward API's namespace of the pod, the fallback for the Secret's namespace. */
  podNamespace: 'POD_NAMESPACE',
  webhookService: 'EDGE_REGISTRAR_WEBHOOK_SERVICE',
  mutatingWebhook: 'EDGE_REGISTRAR_MUTATING_WEBHOOK',
  validatingWebhook: 'EDGE_REGISTRAR_VALIDATING_WEBHOOK',
  certDays: 'EDGE_REGISTRAR_CERT_DAYS',
  certRenewBefore: 'EDGE_REGISTRAR_CERT_RENEW_BEFORE_DAYS',
  certCheckInterval: 'EDGE_REGISTRAR_CERT_CHECK_INTERVAL_SECONDS',
  telemetry: 'EDGE_REGISTRAR_TELEMETRY',
  telemetryNamespace: 'EDGE_REGISTRAR_TELEMETRY_NAMESPACE',
  telemetryName: 'EDGE_REGISTRAR_TELEMETRY_NAME',
  telemetrySelector: 'EDGE_REGISTRAR_TELEMETRY_SELECTOR',
  telemetryTargetRefs: 'EDGE_REGISTRAR_TELEMETRY_TARGET_REFS',
  telemetryMetrics: 'EDGE_REGISTRAR_TELEMETRY_METRICS',
  telemetrySourceIdentity: 'EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY',
} as const;

/** How long a client may take to send a request's headers, and the whole request, to any of our HTTP servers. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

const port = z.coerce.number().int().min(0).max(65535);
const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label (lower-case alphanumerics and "-")').max(63);

const commonSchema = z.object({
  namespace: dnsLabel.default('airport-prod'),
  /** Undefined means in-cluster credentials. */
  kubeconfig: z.string().min(1).optional(),
  policyPath: z.string().min(1).optional(),
  logLevel: logLevel.default('info'),
});

const selfCertificateSchema = z
  .object({
    secretName: z.string().min(1),
    secretNamespace: dnsLabel,
    /** The webhook's Service: the serving certificate's DNS names. */
    service: dnsLabel,
    mutatingWebhook: z.string().min(1).optional(),
    validatingWebhook: z.string().min(1).optional(),
    days: z.coerce.number().int().positive().default(365),
    caDays: z.coerce.number().int().positive().default(3650),
    renewBeforeDays: z.coerce.number().int().positive().default(30),
    checkIntervalMs: z.coerce.number().int().positive().default(60_000),
  })
  .refine((c) => c.renewBeforeDays < c.days, { message: 'renew-before must be shorter than the certificate validity', path: ['renewBeforeDays'] });

const webhookSchema = commonSchema.extend({
  host: z.string().min(1).default('0.0.0.0'),
  port: port.default(8443),
  tlsCertFile: z.string().min(1).default('certs/tls.crt'),
  tlsKeyFile: z.string().min(1).default('certs/tls.key'),
  /** Plain-HTTP port for /metrics, /healthz and /readyz (Prometheus, kubelet probes); unset = HTTPS port only. */
  metricsPort: port.optional(),
  istioApiVersion: z.enum(['v1', 'v1beta1', 'v1alpha3']).default('v1'),
  /** The largest AdmissionReview accepted; Kubernetes objects are at most ~1.5 MiB, a review carries two. */
  bodyLimitBytes: z.number().int().positive().default(4 * 1024 * 1024),
  /**
   * The API server keeps idle connections to webhooks for 90 s; ours must outlive that or
   * it meets a closed connection ("failed calling webhook ... EOF").
   */
  keepAliveTimeoutMs: z.number().int().positive().default(120_000),
  /** A client must send a request's headers within this (a slow client is answered 408 and cut off). */
  headersTimeoutMs: z.number().int().positive().default(DEFAULT_HEADERS_TIMEOUT_MS),
  /** ...and the whole request within this. */
  requestTimeoutMs: z.number().int().positive().default(DEFAULT_REQUEST_TIMEOUT_MS),
  /** Time between "not ready" and closing the listener, so endpoints stop sending traffic first. */
  shutdownDelayMs: z.coerce.number().int().min(0).default(5_000),
  /** How long in-flight requests may take to finish after the listener closes. */
  drainTimeoutMs: z.number().int().min(0).default(10_000),
  fileCheckIntervalMs: z.number().int().positive().default(10_000),
  /** files: --tls-cert/--tls-key (cert-manager, a provided Secret); self: the webhook's own Secret. */
  certificateMode: z.enum(['files', 'self']).default('files'),
  selfCertificate: selfCertificateSchema.optional(),
});

const checkSchema = commonSchema.extend({
  files: z.array(z.string().min(1)).min(1, 'give at least one FILE'),
  output: z.enum(['text', 'json']).default('text'),
  istioApiVersion: z.enum(['v1', 'v1beta1', 'v1alpha3']).default('v1'),
});

const certsSchema = z.object({
  out: z.string().min(1),
  hosts: z.array(z.string().min(1)).min(1, 'give at least one --host'),
  ips: z.array(z.string().min(1)).default([]),
  caDays: z.coerce.number().int().positive().default(3650),
  days: z.coerce.number().int().positive().default(365),
  force: z.boolean().default(false),
});

const redisSchema = z.object({
  url: z.string().regex(/^rediss?:\/\//, 'must start with redis:// or rediss:// (TLS)').default('redis://127.0.0.1:6379'),
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  tls: z.boolean().default(false),
  tlsCaFile: z.string().min(1).optional(),
  /** Sentinel mode when set: host:port pairs; the master is found by `sentinelName`. */
  sentinels: z.array(z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) })).optional(),
  sentinelName: z.string().min(1).default('mymaster'),
  sentinelPassword: z.string().min(1).optional(),
});

const streamSchema = z.object({
  stream: z.string().min(1).default('sigma:vps-events'),
  group: z.string().min(1).default('edge-registrar'),
});

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
const telemetrySchema = z.object({
  enabled: z.boolean().default(false),
  namespace: dnsLabel.default('istio-system'),
  name: dnsLabel.default('edge-registrar-vps'),
  selector: labelMap.default({ istio: 'ingressgateway' }),
  targetRefs: targetRefList.default([]),
  metrics: z
    .string()
    .transform((text) => text.split(',').map((m) => m.trim()).filter((m) => m !== ''))
    .pipe(z.array(z.enum(ISTIO_METRICS)).min(1))
    .default(['REQUEST_COUNT', 'REQUEST_DURATION']),
  /**
   * Istio's source tags (source_workload, _namespace, _app, _version, _canonical_service and
   * _revision) name a registered VPS's entry for its requests, so Kiali draws each VPS → Xboard.
   */
  sourceIdentity: z.boolean().default(false),
  /** A change to the fleet reaches the Telemetry after this long, so a burst is one write. */
  coalesceMs: z.number().int().positive().default(2_000),
});

const syncSchema = commonSchema.extend({
  redis: redisSchema,
  ...streamSchema.shape,
  /** This replica's name in the consumer group and in the Lease. */
  consumer: z.string().min(1),
  port: port.default(9090),
  telemetry: telemetrySchema.prefault({}),
  host: z.string().min(1).default('0.0.0.0'),
  istioApiVersion: z.enum(['v1', 'v1beta1', 'v1alpha3']).default('v1'),
  batchSize: z.number().int().positive().default(200),
  blockMs: z.number().int().positive().default(5_000),
  /** Parallel VPSs within a batch; events of one VPS are always applied in order. */
  concurrency: z.coerce.number().int().positive().max(256).default(16),
  /** Pending entries of a consumer idle this long are taken over (a dead replica's). */
  claimIdleMs: z.number().int().positive().default(60_000),
  /**
   * A consumer (another replica's name: pods get new names on every rollout) with nothing
   * pending and silent this long is removed from the group, so the group does not grow with
   * every restart. A replica that comes back is re-created by its next read.
   */
  consumerRetentionMs: z.number().int().positive().default(3_600_000),
  /** An entry delivered this often without being acknowledged is a poison entry. */
  maxDeliveries: z.number().int().positive().default(10),
  /**
   * Attempts at an event whose failures are neither transient (API server or Redis away)
   * nor a refusal; then it is dead-lettered (rule event.retries-exhausted) with the error.
   */
  maxAttempts: z.coerce.number().int().positive().default(10),
  /** The dead-letter stream is trimmed to about this many entries (XADD MAXLEN ~). */
  deadLetterMaxLength: z.coerce.number().int().positive().default(100_000),
  /** Liveness fails when the consume loop or the events in flight made no progress this long. */
  stallMs: z.number().int().positive().default(120_000),
  /** Every Redis command (not the blocking read, which has its own watchdog) gets this long. */
  redisCommandTimeoutMs: z.number().int().positive().default(5_000),
  /** How often stream lag, pending and dead-letter counts are read for /metrics (never per scrape). */
  metricsRefreshMs: z.number().int().positive().default(15_000),
  resyncIntervalMs: z.coerce.number().int().positive().default(300_000),
  orphanGraceMs: z.coerce.number().int().min(0).default(600_000),
  /** sync: remove orphans after the grace period; upsert-only: never delete on resync. */
  orphanPolicy: z.enum(['sync', 'upsert-only']).default('sync'),
  /** Log what resync would change without changing it. */
  resyncDryRun: z.boolean().default(false),
  leaseName: z.string().min(1).default('edge-registrar-sync'),
  /** client-go's defaults: a candidate waits 15 s after the Lease last changed; the holder steps down 10 s after its last renewal; tries every 2 s. */
  leaseDurationMs: z.number().int().positive().default(15_000),
  leaseRenewDeadlineMs: z.number().int().positive().default(10_000),
  leaseRenewMs: z.number().int().positive().default(2_000),
  retryBaseMs: z.number().int().positive().default(200),
  retryMaxMs: z.number().int().positive().default(30_000),
  tombstoneTtlSeconds: z.number().int().positive().default(30 * 24 * 3600),
})
  .refine((c) => c.leaseRenewDeadlineMs < c.leaseDurationMs, { message: 'the renew deadline must be shorter than the lease duration', path: ['leaseRenewDeadlineMs'] })
  .refine((c) => c.leaseRenewMs < c.leaseRenewDeadlineMs, { message: 'the retry period must be shorter than the renew deadline', path: ['leaseRenewMs'] });

const publishSchema = z.object({ redis: redisSchema, ...streamSchema.shape });

/** `edge-registrar doctor`: what to look at; Redis is optional (its checks are skipped without it). */
const doctorSchema = commonSchema.extend({
  redis: redisSchema.optional(),
  ...streamSchema.shape,
  istioApiVersion: z.enum(['v1', 'v1beta1', 'v1alpha3']).default('v1'),
  webhookName: z.string().min(1).default('edge-registrar'),
  /** NAMESPACE/NAME of the webhook's certificate Secret (ca.crt, tls.crt). */
  certSecret: z.string().regex(/^[a-z0-9-]+\/[a-z0-9.-]+$/, 'must be NAMESPACE/NAME').optional(),
  istiodNamespace: dnsLabel.default('istio-system'),
  telemetry: telemetrySchema.prefault({}),
  output: z.enum(['text', 'json']).default('text'),
});

export type CommonConfig = z.output<typeof commonSchema>;
export type RedisConfig = z.output<typeof redisSchema>;
export type SyncConfig = z.output<typeof syncSchema>;
export type PublishConfig = z.output<typeof publishSchema>;
export type DoctorConfig = z.output<typeof doctorSchema>;
export type WebhookConfig = z.output<typeof webhookSchema>;
export type CheckConfig = z.output<typeof checkSchema>;
export type CertsConfig = z.output<typeof certsSchema>;

/** Flag names as a user types them, for error messages. */
const FLAG_NAMES: Record<string, string> = {
  namespace: `--namespace / ${ENV.namespace}`,
  kubeconfig: `--kubeconfig / ${ENV.kubeconfig}`,
  policyPath: `--policy / ${ENV.policy}`,
  logLevel: `--log-level / ${ENV.logLevel}`,
  host: `--host / ${ENV.host}`,
  port: `--port / ${ENV.port}`,
  tlsCertFile: `--tls-cert / ${ENV.tlsCert}`,
  tlsKeyFile: `--tls-key / ${ENV.tlsKey}`,
  metricsPort: `--metrics-port / ${ENV.metricsPort}`,
  istioApiVersion: `--istio-api-version / ${ENV.istioApiVersion}`,
  shutdownDelayMs: `--shutdown-delay / ${ENV.shutdownDelay}`,
  certificateMode: `--cert-mode / ${ENV.certMode}`,
  selfCertificate: 'self-managed certificate',
  secretName: `--cert-secret / ${ENV.certSecret}`,
  secretNamespace: `--cert-secret-namespace / ${ENV.certSecretNamespace} (or ${ENV.podNamespace})`,
  service: `--service / ${ENV.webhookService}`,
  renewBeforeDays: `--cert-renew-before / ${ENV.certRenewBefore}`,
  redis: `--redis-url / ${ENV.redisUrl} (and REDIS_*)`,
  stream: `--stream / ${ENV.stream}`,
  group: `--group / ${ENV.group}`,
  consumer: `--consumer / ${ENV.consumer}`,
  orphanPolicy: `--orphan-policy / ${ENV.orphanPolicy}`,
  resyncIntervalMs: `--resync-interval / ${ENV.resyncInterval}`,
  orphanGraceMs: `--orphan-grace / ${ENV.orphanGrace}`,
  leaseName: `--lease-name / ${ENV.leaseName}`,
  concurrency: `--concurrency / ${ENV.syncConcurrency}`,
  maxAttempts: `--max-attempts / ${ENV.maxAttempts}`,
  deadLetterMaxLength: `--dlq-max-length / ${ENV.deadLetterMaxLength}`,
  'telemetry.enabled': `--telemetry / ${ENV.telemetry}`,
  webhookName: '--webhook-name',
  certSecret: '--cert-secret',
  istiodNamespace: '--istiod-namespace',
  output: '--output',
  'telemetry.namespace': `--telemetry-namespace / ${ENV.telemetryNamespace}`,
  'telemetry.name': `--telemetry-name / ${ENV.telemetryName}`,
  'telemetry.selector': `--telemetry-selector / ${ENV.telemetrySelector}`,
  'telemetry.targetRefs': `--telemetry-target-refs / ${ENV.telemetryTargetRefs}`,
  'telemetry.metrics': `--telemetry-metrics / ${ENV.telemetryMetrics}`,
  'telemetry.sourceIdentity': `--telemetry-source-identity / ${ENV.telemetrySourceIdentity}`,
  files: 'FILE',
  hosts: '--host',
  ips: '--ip',
  out: '--out',
};

/** A rejected value as the message shows it: secrets and URL credentials redacted. */
function shown(value: unknown): string {
  return value === undefined ? 'missing' : `got ${JSON.stringify(redactSecrets(value))}`;
}

function parseWith<S extends z.ZodType>(schema: S, input: Record<string, unknown>): z.output<S> {
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(defined);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const [head, ...rest] = issue.path;
      // A nested setting with a flag of its own (the self-managed certificate's) is named by it.
      // The longest leading part of the path with a flag of its own (telemetry.metrics for
      // telemetry.metrics[1]), else the last key's.
      const valueAt = (path: readonly PropertyKey[]): unknown => path.reduce<unknown>((v, key) => (v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[key] : undefined), defined);
      const depth = rest.length === 0 ? undefined : [...Array(issue.path.length).keys()].map((i) => issue.path.length - i).find((k) => k > 1 && FLAG_NAMES[issue.path.slice(0, k).join('.')] !== undefined);
      if (depth !== undefined) {
        const tail = issue.path.slice(depth);
        return `${FLAG_NAMES[issue.path.slice(0, depth).join('.')]}${tail.length > 0 ? ` ${formatPath(tail)}` : ''}: ${issue.message} (${shown(valueAt(issue.path.slice(0, depth)))})`;
      }
      const last = issue.path.at(-1);
      const nested = rest.length > 0 && typeof last === 'string' ? FLAG_NAMES[last] : undefined;
      if (nested !== undefined) return `${nested}: ${issue.message} (${shown(valueAt(issue.path))})`;
      const name = typeof head === 'string' ? (FLAG_NAMES[head] ?? head) : formatPath(issue.path);
      const value = typeof head === 'string' ? defined[head] : undefined;
      const where = rest.length > 0 ? `${name} ${formatPath(rest)}` : name;
      return `${where}: ${issue.message} (${shown(value)})`;
    });
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  return result.data;
}

export interface CommonFlags {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
  policy?: string | undefined;
  logLevel?: string | undefined;
}

function commonInput(flags: CommonFlags, env: Env): Record<string, unknown> {
  return {
    namespace: flags.namespace ?? env[ENV.namespace],
    kubeconfig: flags.kubeconfig ?? env[ENV.kubeconfig],
    policyPath: flags.policy ?? env[ENV.policy],
    logLevel: flags.logLevel ?? env[ENV.logLevel],
  };
}

export interface WebhookFlags extends CommonFlags {
  host?: string | undefined;
  port?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  metricsPort?: string | undefined;
  istioApiVersion?: string | undefined;
  shutdownDelay?: string | undefined;
  certMode?: string | undefined;
  certSecret?: string | undefined;
  certSecretNamespace?: string | undefined;
  service?: string | undefined;
  mutatingWebhook?: string | undefined;
  validatingWebhook?: string | undefined;
  certDays?: string | undefined;
  certRenewBefore?: string | undefined;
}

/** Seconds as a user writes them, milliseconds as the code uses them. */
function secondsToMs(value: string | undefined): number | string | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? Math.round(n * 1000) : value;
}

export function webhookConfig(flags: WebhookFlags, env: Env): WebhookConfig {
  return parseWith(webhookSchema, {
    ...commonInput(flags, env),
    host: flags.host ?? env[ENV.host],
    port: flags.port ?? env[ENV.port],
    tlsCertFile: flags.tlsCert ?? env[ENV.tlsCert],
    tlsKeyFile: flags.tlsKey ?? env[ENV.tlsKey],
    metricsPort: flags.metricsPort ?? env[ENV.metricsPort],
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    shutdownDelayMs: secondsToMs(flags.shutdownDelay ?? env[ENV.shutdownDelay]),
    certificateMode: flags.certMode ?? env[ENV.certMode],
    selfCertificate: (flags.certMode ?? env[ENV.certMode]) === 'self' ? selfCertificateInput(flags, env) : undefined,
  });
}

function selfCertificateInput(flags: WebhookFlags, env: Env): Record<string, unknown> {
  const input = {
    secretName: flags.certSecret ?? env[ENV.certSecret],
    secretNamespace: flags.certSecretNamespace ?? env[ENV.certSecretNamespace] ?? env[ENV.podNamespace],
    service: flags.service ?? env[ENV.webhookService],
    mutatingWebhook: flags.mutatingWebhook ?? env[ENV.mutatingWebhook],
    validatingWebhook: flags.validatingWebhook ?? env[ENV.validatingWebhook],
    days: flags.certDays ?? env[ENV.certDays],
    renewBeforeDays: flags.certRenewBefore ?? env[ENV.certRenewBefore],
    checkIntervalMs: secondsToMs(env[ENV.certCheckInterval]),
  };
  return Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== ''));
}

export interface RedisFlags {
  redisUrl?: string | undefined;
  stream?: string | undefined;
  group?: string | undefined;
}

function parseSentinels(value: string | undefined): { host: string; port: number }[] | string | undefined {
  if (value === undefined || value === '') return undefined;
  const pairs = value.split(',').map((p) => p.trim());
  const parsed = pairs.map((p) => {
    const m = /^(.+):(\d+)$/.exec(p);
    return m ? { host: m[1] ?? '', port: Number(m[2]) } : undefined;
  });
  // A malformed list is passed through as a string so the schema names it.
  return parsed.every((p) => p !== undefined) ? parsed : value;
}

/** The object without its unset (undefined or empty) settings, so the schema's defaults fill them. */
function definedOnly(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined && v !== ''));
}

function parseBoolean(value: string | undefined): boolean | string | undefined {
  if (value === undefined || value === '') return undefined;
  if (['1', 'true', 'yes'].includes(value.toLowerCase())) return true;
  if (['0', 'false', 'no'].includes(value.toLowerCase())) return false;
  return value; // the schema names it
}

function redisInput(flags: RedisFlags, env: Env): Record<string, unknown> {
  const url = flags.redisUrl ?? env[ENV.redisUrl];
  return Object.fromEntries(
    Object.entries({
      url,
      username: env[ENV.redisUsername],
      password: env[ENV.redisPassword],
      tls: parseBoolean(env[ENV.redisTls]),
      tlsCaFile: env[ENV.redisTlsCaFile],
      sentinels: parseSentinels(env[ENV.redisSentinels]),
      sentinelName: env[ENV.redisSentinelName],
      sentinelPassword: env[ENV.redisSentinelPassword],
    }).filter(([, v]) => v !== undefined && v !== ''),
  );
}

/** The flags both the sync daemon and doctor take to find the gateway and the managed Telemetry. */
interface TelemetryGatewayFlags {
  telemetry?: boolean | undefined;
  telemetryNamespace?: string | undefined;
  telemetryName?: string | undefined;
  telemetrySelector?: string | undefined;
}

function telemetryGatewayInput(flags: TelemetryGatewayFlags, env: Env): Record<string, unknown> {
  return {
    enabled: flags.telemetry ?? parseBoolean(env[ENV.telemetry]),
    namespace: flags.telemetryNamespace ?? env[ENV.telemetryNamespace],
    name: flags.telemetryName ?? env[ENV.telemetryName],
    selector: flags.telemetrySelector ?? env[ENV.telemetrySelector],
  };
}

export interface SyncFlags extends CommonFlags, RedisFlags, TelemetryGatewayFlags {
  consumer?: string | undefined;
  port?: string | undefined;
  orphanPolicy?: string | undefined;
  resyncInterval?: string | undefined;
  orphanGrace?: string | undefined;
  resyncDryRun?: boolean | undefined;
  leaseName?: string | undefined;
  istioApiVersion?: string | undefined;
  concurrency?: string | undefined;
  maxAttempts?: string | undefined;
  dlqMaxLength?: string | undefined;
  telemetryTargetRefs?: string | undefined;
  telemetryMetrics?: string | undefined;
  telemetrySourceIdentity?: boolean | undefined;
}

export function syncConfig(flags: SyncFlags, env: Env, defaultConsumer: string): SyncConfig {
  return parseWith(syncSchema, {
    ...commonInput(flags, env),
    redis: redisInput(flags, env),
    stream: flags.stream ?? env[ENV.stream],
    group: flags.group ?? env[ENV.group],
    consumer: flags.consumer ?? env[ENV.consumer] ?? defaultConsumer,
    port: flags.port ?? env[ENV.syncPort],
    orphanPolicy: flags.orphanPolicy ?? env[ENV.orphanPolicy],
    resyncIntervalMs: secondsToMs(flags.resyncInterval ?? env[ENV.resyncInterval]),
    orphanGraceMs: secondsToMs(flags.orphanGrace ?? env[ENV.orphanGrace]),
    resyncDryRun: flags.resyncDryRun,
    leaseName: flags.leaseName ?? env[ENV.leaseName],
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    concurrency: flags.concurrency ?? env[ENV.syncConcurrency],
    maxAttempts: flags.maxAttempts ?? env[ENV.maxAttempts],
    deadLetterMaxLength: flags.dlqMaxLength ?? env[ENV.deadLetterMaxLength],
    telemetry: definedOnly({
      ...telemetryGatewayInput(flags, env),
      targetRefs: flags.telemetryTargetRefs ?? env[ENV.telemetryTargetRefs],
      metrics: flags.telemetryMetrics ?? env[ENV.telemetryMetrics],
      sourceIdentity: flags.telemetrySourceIdentity ?? parseBoolean(env[ENV.telemetrySourceIdentity]),
    }),
  });
}

export interface DoctorFlags extends CommonFlags, RedisFlags, TelemetryGatewayFlags {
  webhookName?: string | undefined;
  certSecret?: string | undefined;
  istiodNamespace?: string | undefined;
  output?: string | undefined;
  istioApiVersion?: string | undefined;
}

export function doctorConfig(flags: DoctorFlags, env: Env): DoctorConfig {
  const redisGiven = flags.redisUrl !== undefined || env[ENV.redisUrl] !== undefined || env[ENV.redisSentinels] !== undefined;
  return parseWith(doctorSchema, {
    ...commonInput(flags, env),
    redis: redisGiven ? redisInput(flags, env) : undefined,
    stream: flags.stream ?? env[ENV.stream],
    group: flags.group ?? env[ENV.group],
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    webhookName: flags.webhookName,
    certSecret: flags.certSecret,
    istiodNamespace: flags.istiodNamespace,
    output: flags.output,
    telemetry: definedOnly(telemetryGatewayInput(flags, env)),
  });
}

export function publishConfig(flags: RedisFlags, env: Env): PublishConfig {
  return parseWith(publishSchema, { redis: redisInput(flags, env), stream: flags.stream ?? env[ENV.stream], group: flags.group ?? env[ENV.group] });
}

export interface CheckFlags extends CommonFlags {
  output?: string | undefined;
  istioApiVersion?: string | undefined;
}

export function checkConfig(files: string[], flags: CheckFlags, env: Env): CheckConfig {
  return parseWith(checkSchema, {
    ...commonInput(flags, env),
    files,
    output: flags.output,
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
  });
}

export interface CertsFlags {
  out?: string | undefined;
  host?: string[] | undefined;
  ip?: string[] | undefined;
  days?: string | undefined;
  caDays?: string | undefined;
  force?: boolean | undefined;
}

export function certsConfig(flags: CertsFlags): CertsConfig {
  return parseWith(certsSchema, {
    out: flags.out,
    hosts: flags.host,
    ips: flags.ip,
    days: flags.days,
    caDays: flags.caDays,
    force: flags.force,
  });
}
