/**
 * The environment, read in one place: the name of every variable a process reads (ENV), and
 * how a variable's text becomes a value. The commands (src/cli/) hand `process.env` to the
 * configuration functions of src/config/; no other code reads a variable.
 */

export type Env = Readonly<Record<string, string | undefined>>;

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
  redisClusterNodes: 'REDIS_CLUSTER_NODES',
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
  commitReplicas: 'EDGE_REGISTRAR_COMMIT_REPLICAS',
  deadLetterMaxLength: 'EDGE_REGISTRAR_DLQ_MAX_LENGTH',
  outcomeStream: 'EDGE_REGISTRAR_OUTCOME_STREAM',
  outcomeMaxLength: 'EDGE_REGISTRAR_OUTCOME_MAX_LENGTH',
  kubeEvents: 'EDGE_REGISTRAR_KUBE_EVENTS',
  kubeEventsBurst: 'EDGE_REGISTRAR_KUBE_EVENTS_BURST',
  kubeEventsPerMinute: 'EDGE_REGISTRAR_KUBE_EVENTS_PER_MINUTE',
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
  maxBodyBytesInFlight: 'EDGE_REGISTRAR_MAX_BODY_BYTES_IN_FLIGHT',
  maxConnections: 'EDGE_REGISTRAR_MAX_CONNECTIONS',
  apiServerCidrs: 'EDGE_REGISTRAR_API_SERVER_CIDRS',
  telemetry: 'EDGE_REGISTRAR_TELEMETRY',
  telemetryNamespace: 'EDGE_REGISTRAR_TELEMETRY_NAMESPACE',
  telemetryName: 'EDGE_REGISTRAR_TELEMETRY_NAME',
  telemetrySelector: 'EDGE_REGISTRAR_TELEMETRY_SELECTOR',
  telemetryTargetRefs: 'EDGE_REGISTRAR_TELEMETRY_TARGET_REFS',
  telemetryMetrics: 'EDGE_REGISTRAR_TELEMETRY_METRICS',
  telemetrySourceIdentity: 'EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY',
  telemetryMaxExpressionCodepoints: 'EDGE_REGISTRAR_TELEMETRY_MAX_EXPRESSION_CODEPOINTS',
  telemetryMaxObjectBytes: 'EDGE_REGISTRAR_TELEMETRY_MAX_OBJECT_BYTES',
} as const;

/**
 * The memory limit the OS puts on this process (the container's cgroup), 0 when there is
 * none: libuv reports "no limit" as a number near 2^64.
 */
export function processMemoryLimitBytes(): number {
  const limit = process.constrainedMemory();
  return limit > 0 && limit < 2 ** 52 ? limit : 0;
}

/** Seconds as a user writes them, milliseconds as the code uses them. */
export function secondsToMs(value: string | undefined): number | string | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? Math.round(n * 1000) : value;
}

/** `host:port,host:port` (Sentinels, cluster seed nodes). */
export function parseHostPorts(value: string | undefined): { host: string; port: number }[] | string | undefined {
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
export function definedOnly(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined && v !== ''));
}

export function parseBoolean(value: string | undefined): boolean | string | undefined {
  if (value === undefined || value === '') return undefined;
  if (['1', 'true', 'yes'].includes(value.toLowerCase())) return true;
  if (['0', 'false', 'no'].includes(value.toLowerCase())) return false;
  return value; // the schema names it
}
