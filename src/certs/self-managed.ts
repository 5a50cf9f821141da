/**
 * The webhook's certificate when it manages its own (`--cert-mode self`, the Helm chart's
 * default): a CA and serving certificate kept in one Secret, the CA bundle injected into
 * both webhook configurations, renewed well before expiry.
 *
 * Several replicas may start at once. The Secret is the single source of truth and every
 * write is conditional (create fails if it exists, replace carries the resourceVersion), so
 * whoever loses a race reads the winner's certificate instead: all replicas agree on one.
 * The CA bundle is injected before a replica serves a certificate it has not served before,
 * so the API server never meets a certificate it cannot verify.
 */
import * as k8s from '@kubernetes/client-node';
import { makeApiClient } from '../kube/client.ts';
import type { Logger } from 'pino';
import { decide, renewalKeys, renew, type CertificateWants, type StoredCertificates } from './renewal.ts';

export const SECRET_KEYS = { caBundle: 'ca.crt', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key' } as const;

export interface SelfManagedOptions {
  kubeConfig: k8s.KubeConfig;
  secretNamespace: string;
  secretName: string;
  mutatingWebhook: string | undefined;
  validatingWebhook: string | undefined;
  wants: CertificateWants;
  logger: Logger;
  now?: () => Date;
}

export interface Reconciled {
  stored: StoredCertificates;
  /** What was done: 'used', 'created' or 'renewed' (with the reason). */
  action: string;
  /** False when a webhook configuration that exists does not carry the CA bundle yet (a conflict, a refusal). */
  caBundleInjected: boolean;
  /** True when a webhook configuration does not exist yet (nothing calls through it; it is injected once it does). */
  configurationMissing: boolean;
}

type Injection = 'injected' | 'absent' | 'stale';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

function isStatus(error: unknown, code: number): boolean {
  return error instanceof k8s.ApiException && error.code === code;
}

export class SelfManagedCertificate {
  readonly #options: SelfManagedOptions;
  readonly #core: k8s.CoreV1Api;
  readonly #admission: k8s.AdmissionregistrationV1Api;

  constructor(options: SelfManagedOptions) {
    this.#options = options;
    this.#core = makeApiClient(options.kubeConfig, k8s.CoreV1Api);
    this.#admission = makeApiClient(options.kubeConfig, k8s.AdmissionregistrationV1Api);
  }

  /** Reads the Secret, creates or renews it if needed, and injects the CA bundle. */
  async reconcile(): Promise<Reconciled> {
    const now = (this.#options.now ?? (() => new Date()))();
    for (let attempt = 1; ; attempt++) {
      const { stored, resourceVersion } = await this.#read();
      const decision = decide(stored, this.#options.wants, now);
      if (decision.action === 'use') {
        if (stored === undefined) throw new Error('decide() chose "use" with nothing stored');
        return { stored, action: 'used', ...(await this.#inject(stored.caBundle)) };
      }
      const { reason } = decision;
      // Keys are made in the thread pool: a renewal must not stall admission in this process.
      const next = renew(stored, decision, this.#options.wants, now, await renewalKeys(stored, decision));
      try {
        await this.#write(next, resourceVersion);
      } catch (error) {
        // Another replica wrote first (create: 409 AlreadyExists; replace: 409 Conflict).
        if (isStatus(error, 409) && attempt < 5) {
          this.#options.logger.info({ secret: this.#options.secretName, attempt }, 'another replica wrote the certificate Secret first; using theirs');
          continue;
        }
        throw error;
      }
      const action = resourceVersion === undefined ? 'created' : `renewed (${reason})`;
      this.#options.logger.info({ secret: this.#options.secretName, namespace: this.#options.secretNamespace, action: decision.action, reason }, 'webhook certificate written');
      return { stored: next, action, ...(await this.#inject(next.caBundle)) };
    }
  }

  async #read(): Promise<{ stored: StoredCertificates | undefined; resourceVersion: string | undefined }> {
    let secret: k8s.V1Secret;
    try {
      secret = await this.#core.readNamespacedSecret({ name: this.#options.secretName, namespace: this.#options.secretNamespace });
    } catch (error) {
      if (isStatus(error, 404)) return { stored: undefined, resourceVersion: undefined };
      throw error;
    }
    const data = secret.data ?? {};
    return {
      stored: { caBundle: unb64(data[SECRET_KEYS.caBundle]), caKey: unb64(data[SECRET_KEYS.caKey]), cert: unb64(data[SECRET_KEYS.cert]), key: unb64(data[SECRET_KEYS.key]) },
      // Present even when the contents are unusable: a rewrite must still be conditional.
      resourceVersion: secret.metadata?.resourceVersion ?? '',
    };
  }

  async #write(next: StoredCertificates, resourceVersion: string | undefined): Promise<void> {
    const body: k8s.V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: {
        name: this.#options.secretName,
        namespace: this.#options.secretNamespace,
        labels: { 'app.kubernetes.io/name': 'edge-registrar', 'app.kubernetes.io/component': 'webhook-certificate', 'app.kubernetes.io/managed-by': 'edge-registrar' },
        ...(resourceVersion === undefined ? {} : { resourceVersion }),
      },
      data: {
        [SECRET_KEYS.caBundle]: b64(next.caBundle),
        [SECRET_KEYS.caKey]: b64(next.caKey),
        [SECRET_KEYS.cert]: b64(next.cert),
        [SECRET_KEYS.key]: b64(next.key),
      },
    };
    if (resourceVersion === undefined) await this.#core.createNamespacedSecret({ namespace: this.#options.secretNamespace, body });
    else await this.#core.replaceNamespacedSecret({ name: this.#options.secretName, namespace: this.#options.secretNamespace, body });
  }

  /** Sets caBundle on every webhook of both configurations. */
  async #inject(caBundle: string): Promise<{ caBundleInjected: boolean; configurationMissing: boolean }> {
    const wanted = b64(caBundle);
    const results = await Promise.all([
      this.#injectInto('mutating', this.#options.mutatingWebhook, wanted),
      this.#injectInto('validating', this.#options.validatingWebhook, wanted),
    ]);
    return { caBundleInjected: !results.includes('stale'), configurationMissing: results.includes('absent') };
  }

  async #injectInto(kind: 'mutating' | 'validating', name: string | undefined, wanted: string): Promise<Injection> {
    if (name === undefined) return 'injected';
    const log = this.#options.logger.child({ webhookConfiguration: name, kind });
    try {
      const current =
        kind === 'mutating'
          ? await this.#admission.readMutatingWebhookConfiguration({ name })
          : await this.#admission.readValidatingWebhookConfiguration({ name });
      const webhooks = current.webhooks ?? [];
      const stale = webhooks.flatMap((w, i) => (w.clientConfig.caBundle === wanted ? [] : [i]));
      if (stale.length === 0) return 'injected';
      // The test makes the patch conditional: if the object changed since we read it (Helm
      // upgraded it, another replica patched it), the indexes may be wrong; retry next time.
      const body = [
        { op: 'test', path: '/metadata/resourceVersion', value: current.metadata?.resourceVersion },
        ...stale.map((i) => ({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: wanted })),
      ];
      const options = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch);
      if (kind === 'mutating') await this.#admission.patchMutatingWebhookConfiguration({ name, body }, options);
      else await this.#admission.patchValidatingWebhookConfiguration({ name, body }, options);
      log.info({ webhooks: stale.length }, 'CA bundle injected');
      return 'injected';
    } catch (error) {
      if (isStatus(error, 404)) {
        log.warn('webhook configuration not found yet; will inject the CA bundle when it exists');
        return 'absent';
      }
      if (isStatus(error, 409) || isStatus(error, 422)) {
        log.info('webhook configuration changed while injecting; will retry');
        return 'stale';
      }
      throw error;
    }
  }
}
