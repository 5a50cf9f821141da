/**
 * `edge-registrar webhook`: the listener, TLS and certificate modes, and the request limits.
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { type CommonFlags, commonInput, commonSchema, dnsLabel, istioApiVersion, port } from './common.ts';
import { ENV, type Env, processMemoryLimitBytes, secondsToMs } from './env.ts';
import { parseWith } from './flags.ts';

/** etcd's default object limit (--max-request-bytes), and the largest AdmissionReview that can carry two such objects. */
export const ETCD_OBJECT_LIMIT_BYTES = 1.5 * 1024 * 1024;

export const MAX_REVIEW_BYTES = 2 * ETCD_OBJECT_LIMIT_BYTES + 64 * 1024;

/** How long a client may take to send a request's headers, and the whole request, to any of our HTTP servers. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

const selfCertificateSchema = z
  .object({
    secretName: z.string().min(1),
    secretNamespace: dnsLabel,
    /** The webhook's Service: the serving certificate's DNS names. */
    service: dnsLabel,
    mutatingWebhook: z.string().min(1).optional(),
    validatingWebhook: z.string().min(1).optional(),
    days: z.coerce.number().int().positive().max(3650).default(365),
    /**
     * The CA's validity; unset, derived from the serving certificate's: at least 3650 days and
     * three serving lifetimes (with their renewal windows). A CA is replaced once it would not
     * outlive a new serving certificate, so a CA barely longer than one (3650 days against a
     * serving certificate of 3621 or more) was replaced at every reconcile, every minute.
     */
    caDays: z.coerce.number().int().positive().optional(),
    renewBeforeDays: z.coerce.number().int().positive().default(30),
    checkIntervalMs: z.coerce.number().int().positive().default(60_000),
  })
  .refine((c) => c.renewBeforeDays < c.days, { message: 'renew-before must be shorter than the certificate validity', path: ['renewBeforeDays'] })
  .refine((c) => c.caDays === undefined || c.caDays >= 2 * (c.days + c.renewBeforeDays), { message: 'the CA must outlive two serving certificates and their renewal windows (2 × (days + renew-before)), or it is replaced at almost every check', path: ['caDays'] })
  .transform((c) => ({ ...c, caDays: c.caDays ?? Math.max(3650, 3 * (c.days + c.renewBeforeDays)) }));

const webhookSchema = commonSchema.extend({
  host: z.string().min(1).default('0.0.0.0'),
  port: port.default(8443),
  tlsCertFile: z.string().min(1).default('certs/tls.crt'),
  tlsKeyFile: z.string().min(1).default('certs/tls.key'),
  /** Plain-HTTP port for /metrics, /healthz and /readyz (Prometheus, kubelet probes); unset = HTTPS port only. */
  metricsPort: port.optional(),
  istioApiVersion,
  /**
   * The largest AdmissionReview accepted: etcd refuses an object over 1.5 MiB (its
   * --max-request-bytes), a review carries the object and the stored oldObject, plus an
   * envelope (request metadata, userInfo, options) well under 64 KiB. A larger review is for an
   * object etcd would refuse anyway.
   */
  bodyLimitBytes: z.number().int().positive().default(MAX_REVIEW_BYTES),
  /** The pod's memory limit (cgroup), 0 when none is known: sizes the body budget. */
  memoryLimitBytes: z.number().int().min(0).default(0),
  /** Bytes of request bodies held at once; unset: derived from the memory limit (webhook/body-budget.ts). */
  bodyBudgetBytes: z.coerce.number().int().positive().optional(),
  /** A request body must arrive within this; the API server sends it at once, and gives up on a webhook after at most 30 s. */
  bodyTimeoutMs: z.number().int().positive().default(10_000),
  /** A small body (64 KiB or less announced: every WorkloadEntry review) must arrive within this: the API server sends it in one go. */
  smallBodyTimeoutMs: z.number().int().positive().default(2_000),
  /** Open connections at most; unset: sized from the memory limit (webhook/connection-guard.ts). */
  maxConnections: z.coerce.number().int().positive().optional(),
  /**
   * The addresses the API server calls from (CIDRs, comma-separated): peers in them are trusted
   * (more connections, kept alive) and nobody else is. Unset: a peer earns trust by sending a
   * review, which anyone who reaches the port can do.
   */
  apiServerCidrs: z
    .string()
    .transform((text) => text.split(',').map((c) => c.trim()).filter((c) => c !== ''))
    .pipe(z.array(z.string().refine((c) => ipaddr.isValidCIDR(c), { error: 'must be a CIDR such as 172.18.0.2/32 or fd00::/64' })))
    .optional(),
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
  /** The sync daemon's Lease in the namespace: the webhook refuses the daemon's writes from any term but its current one. */
  syncLeaseName: z.string().min(1).default('edge-registrar-sync'),
  /** files: --tls-cert/--tls-key (cert-manager, a provided Secret); self: the webhook's own Secret. */
  certificateMode: z.enum(['files', 'self']).default('files'),
  selfCertificate: selfCertificateSchema.optional(),
});

export type WebhookConfig = z.output<typeof webhookSchema>;

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
  maxBodyBytesInFlight?: string | undefined;
  maxConnections?: string | undefined;
  apiServerCidrs?: string | undefined;
  syncLease?: string | undefined;
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
    memoryLimitBytes: processMemoryLimitBytes(),
    bodyBudgetBytes: flags.maxBodyBytesInFlight ?? env[ENV.maxBodyBytesInFlight],
    maxConnections: flags.maxConnections ?? env[ENV.maxConnections],
    apiServerCidrs: flags.apiServerCidrs ?? env[ENV.apiServerCidrs],
    syncLeaseName: flags.syncLease ?? env[ENV.leaseName],
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
