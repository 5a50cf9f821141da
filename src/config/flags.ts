/**
 * Every flag and variable by the name a user types (FLAG_NAMES), and the one parse that turns
 * a failed validation into a ConfigError naming the flag or variable, the value and the rule.
 */
import { z } from 'zod';
import { redactSecrets } from '../util/redact.ts';
import { formatPath } from '../util/zod-format.ts';
import { ENV } from './env.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

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
  'redis.clusterNodes': `--redis-cluster-nodes / ${ENV.redisClusterNodes}`,
  'redis.sentinels': ENV.redisSentinels,
  selfCertificate: 'self-managed certificate',
  secretName: `--cert-secret / ${ENV.certSecret}`,
  secretNamespace: `--cert-secret-namespace / ${ENV.certSecretNamespace} (or ${ENV.podNamespace})`,
  service: `--service / ${ENV.webhookService}`,
  renewBeforeDays: `--cert-renew-before / ${ENV.certRenewBefore}`,
  days: `--cert-days / ${ENV.certDays}`,
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
  commitReplicas: `--commit-replicas / ${ENV.commitReplicas}`,
  deadLetterMaxLength: `--dlq-max-length / ${ENV.deadLetterMaxLength}`,
  outcomeStream: `--outcome-stream / ${ENV.outcomeStream}`,
  outcomeMaxLength: `--outcome-max-length / ${ENV.outcomeMaxLength}`,
  'kubeEvents.enabled': `--no-kube-events / ${ENV.kubeEvents}`,
  'kubeEvents.burst': `--kube-events-burst / ${ENV.kubeEventsBurst}`,
  'kubeEvents.perMinute': `--kube-events-per-minute / ${ENV.kubeEventsPerMinute}`,
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
  'telemetry.maxExpressionCodepoints': `--telemetry-max-expression-codepoints / ${ENV.telemetryMaxExpressionCodepoints}`,
  'telemetry.maxObjectBytes': `--telemetry-max-object-bytes / ${ENV.telemetryMaxObjectBytes}`,
  waitMs: '--wait-timeout',
  maxConnections: `--max-connections / ${ENV.maxConnections}`,
  apiServerCidrs: `--api-server-cidrs / ${ENV.apiServerCidrs}`,
  rules: '--no-check',
  files: 'FILE',
  hosts: '--host',
  ips: '--ip',
  out: '--out',
};

/** A rejected value as the message shows it: secrets and URL credentials redacted. */
function shown(value: unknown): string {
  return value === undefined ? 'missing' : `got ${JSON.stringify(redactSecrets(value))}`;
}

export function parseWith<S extends z.ZodType>(schema: S, input: Record<string, unknown>): z.output<S> {
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
