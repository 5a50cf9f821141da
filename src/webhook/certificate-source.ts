/**
 * Where the serving certificate comes from: files (cert-manager, a provided Secret mounted
 * as a volume, `certs generate`), reloaded when they change; or the webhook's own
 * self-managed Secret, reconciled periodically so a renewal by any replica reaches every
 * replica. Either way the running server swaps certificates without dropping connections.
 */
import type { Logger } from 'pino';
import type { WebhookConfig } from '../config/webhook.ts';
import { SelfManagedCertificate, type Reconciled } from '../certs/self-managed.ts';
import { serviceHostNames } from '../certs/authority.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { backoffDelay } from '../util/backoff.ts';
import { loadCertificate, parseCertificatePair, watchCertificate, type LoadedCertificate } from './serving-cert.ts';

export interface CertificateSource {
  /** The certificate to start serving with (self mode: created or read, CA bundle injected). */
  initial: LoadedCertificate;
  /** Starts watching; onLoad receives a different certificate. Returns stop. */
  watch(handlers: { onLoad: (c: LoadedCertificate) => void; onError: (e: unknown) => void }): () => void;
  /**
   * Whether every webhook configuration that exists trusts the CA of the certificate being
   * served (always true for files: whoever writes them injects the CA, as cert-manager does).
   */
  trusted(): boolean;
}

export async function openCertificateSource(config: WebhookConfig, logger: Logger): Promise<CertificateSource> {
  if (config.certificateMode === 'files') {
    const initial = await loadCertificate(config.tlsCertFile, config.tlsKeyFile);
    return { initial, watch: (handlers) => watchCertificate(config.tlsCertFile, config.tlsKeyFile, initial, { intervalMs: config.fileCheckIntervalMs, ...handlers }), trusted: () => true };
  }
  const self = config.selfCertificate;
  if (self === undefined) throw new Error('certificate mode "self" needs its settings; src/config/webhook.ts requires them');
  const manager = new SelfManagedCertificate({
    kubeConfig: loadKubeConfig(config.kubeconfig),
    secretNamespace: self.secretNamespace,
    secretName: self.secretName,
    mutatingWebhook: self.mutatingWebhook,
    validatingWebhook: self.validatingWebhook,
    wants: {
      hosts: serviceHostNames(self.service, self.secretNamespace),
      days: self.days,
      caDays: self.caDays,
      renewBeforeDays: self.renewBeforeDays,
      caCommonName: `${self.service}.${self.secretNamespace} CA`,
    },
    logger: logger.child({ component: 'certificate' }),
  });
  return selfManagedSource(manager, { checkIntervalMs: self.checkIntervalMs, source: `Secret ${self.secretNamespace}/${self.secretName}` }, logger.child({ component: 'certificate' }));
}

export interface SelfManagedSourceOptions {
  checkIntervalMs: number;
  /** How soon to look again while the CA is not yet in every webhook configuration. */
  untrustedRetryMs?: number;
  /** Where the certificate lives, for error messages. */
  source: string;
}

/**
 * The self-managed certificate as the server sees it. A certificate is swapped in only once
 * its CA is in every webhook configuration that exists: the API server verifies the webhook
 * with the caBundle it holds, and a certificate from a CA it does not hold yet would refuse
 * every write (with failurePolicy Fail) until the bundle arrives. While the CA cannot be
 * injected (a conflict with a helm upgrade, say), the old certificate stays in service and the
 * reconcile is retried every few seconds; a replica that starts with nothing trusted to serve
 * serves the new one but reports not ready (trusted() is false), so the Service sends the API
 * server to replicas that are.
 */
export async function selfManagedSource(manager: { reconcile(): Promise<Reconciled> }, options: SelfManagedSourceOptions, log: Logger): Promise<CertificateSource> {
  const retryMs = options.untrustedRetryMs ?? 2_000;
  let configurationMissing = false;
  const load = async (): Promise<{ certificate: LoadedCertificate; trusted: boolean }> => {
    const result = await manager.reconcile();
    configurationMissing = result.configurationMissing;
    return { certificate: parseCertificatePair(Buffer.from(result.stored.cert), Buffer.from(result.stored.key), options.source), trusted: result.caBundleInjected };
  };
  // The API server may not be reachable yet when a pod starts: retry for a while before
  // giving up (and letting the kubelet restart us with its own backoff).
  let initial: { certificate: LoadedCertificate; trusted: boolean } | undefined;
  for (let attempt = 1; initial === undefined; attempt++) {
    try {
      initial = await load();
    } catch (error) {
      if (attempt >= 8) throw error;
      const delay = backoffDelay(attempt, { baseMs: 500, maxMs: 10_000 });
      log.warn({ err: error, attempt, delayMs: delay }, 'could not read or create the certificate Secret; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  let current = initial.certificate;
  let trusted = initial.trusted;
  if (!trusted) log.warn('the CA bundle is not in every webhook configuration yet: not ready until it is');
  return {
    initial: current,
    trusted: () => trusted,
    watch: ({ onLoad, onError }) => {
      let timer: NodeJS.Timeout | undefined;
      let stopped = false;
      const check = (): void => {
        void load()
          .then((next) => {
            if (next.certificate.fingerprint === current.fingerprint) {
              if (next.trusted !== trusted) log.info({ trusted: next.trusted }, next.trusted ? 'the CA bundle is in every webhook configuration' : 'the CA bundle is missing from a webhook configuration');
              trusted = next.trusted;
            } else if (next.trusted) {
              current = next.certificate;
              trusted = true;
              onLoad(next.certificate);
            } else {
              // A new certificate whose CA the API server may not trust yet: keep the one in service.
              log.warn({ fingerprint: next.certificate.fingerprint, retryInMs: retryMs }, 'a new certificate is ready, but its CA is not in every webhook configuration yet; still serving the current one');
            }
            return next.trusted;
          })
          .catch((error: unknown) => {
            onError(error);
            return true;
          })
          .then((settled) => {
            // Soon again while a configuration lacks the bundle or does not exist yet (a fresh install creates it any moment).
            if (!stopped) timer = setTimeout(check, settled && trusted && !configurationMissing ? options.checkIntervalMs : retryMs);
            timer?.unref();
          });
      };
      timer = setTimeout(check, trusted && !configurationMissing ? options.checkIntervalMs : retryMs);
      timer.unref();
      return () => {
        stopped = true;
        clearTimeout(timer);
      };
    },
  };
}
