/**
 * Where the serving certificate comes from: files (cert-manager, a provided Secret mounted
 * as a volume, `certs generate`), reloaded when they change; or the webhook's own
 * self-managed Secret, reconciled periodically so a renewal by any replica reaches every
 * replica. Either way the running server swaps certificates without dropping connections.
 */
import type { Logger } from 'pino';
import type { WebhookConfig } from '../config.ts';
import { SelfManagedCertificate } from '../certs/self-managed.ts';
import { serviceHostNames } from '../certs/authority.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { backoffDelay } from '../util/backoff.ts';
import { loadCertificate, parseCertificatePair, watchCertificate, type LoadedCertificate } from './serving-cert.ts';

export interface CertificateSource {
  /** The certificate to start serving with (self mode: created or read, CA bundle injected). */
  initial: LoadedCertificate;
  /** Starts watching; onLoad receives a different certificate. Returns stop. */
  watch(handlers: { onLoad: (c: LoadedCertificate) => void; onError: (e: unknown) => void }): () => void;
}

export async function openCertificateSource(config: WebhookConfig, logger: Logger): Promise<CertificateSource> {
  if (config.certificateMode === 'files') {
    const initial = await loadCertificate(config.tlsCertFile, config.tlsKeyFile);
    return { initial, watch: (handlers) => watchCertificate(config.tlsCertFile, config.tlsKeyFile, initial, { intervalMs: config.fileCheckIntervalMs, ...handlers }) };
  }
  const self = config.selfCertificate;
  if (self === undefined) throw new Error('certificate mode "self" needs its settings; config.ts requires them');
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
  const log = logger.child({ component: 'certificate' });
  const load = async (): Promise<LoadedCertificate> => {
    const result = await manager.reconcile();
    if (!result.caBundleInjected) log.warn('serving, but the CA bundle is not in every webhook configuration yet');
    return parseCertificatePair(Buffer.from(result.stored.cert), Buffer.from(result.stored.key), `Secret ${self.secretNamespace}/${self.secretName}`);
  };
  // The API server may not be reachable yet when a pod starts: retry for a while before
  // giving up (and letting the kubelet restart us with its own backoff).
  let initial: LoadedCertificate | undefined;
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
  const first = initial;
  return {
    initial: first,
    watch: ({ onLoad, onError }) => {
      let current = first;
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        load()
          .then((next) => {
            if (next.fingerprint !== current.fingerprint) {
              current = next;
              onLoad(next);
            }
          })
          .catch(onError)
          .finally(() => {
            running = false;
          });
      }, self.checkIntervalMs);
      timer.unref();
      return () => {
        clearInterval(timer);
      };
    },
  };
}
