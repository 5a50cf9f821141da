/**
 * `edge-registrar webhook`: wires configuration, policy, caches, certificate and the HTTPS
 * server together, and owns the stop sequence.
 */
import type { Logger } from 'pino';
import type { ClusterView } from '../policy/cluster-view.ts';
import type { WebhookConfig } from '../config/webhook.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { WatchedIndex } from '../kube/watched-index.ts';
import { watchedPolicy } from '../policy-source.ts';
import { createRegistry, createWebhookMetrics } from '../observability/metrics.ts';
import express from 'express';
import { createApp } from './app.ts';
import { BodyBudget, bodyBudgetFor } from './body-budget.ts';
import { ConnectionGuard, connectionLimitsFor } from './connection-guard.ts';
import { probeRoutes, type ProbeCheck } from '../http/probes.ts';
import { closeGracefully, listenHttp } from '../http/serving.ts';
import { listenHttps, swapCertificate } from './server.ts';
import { openCertificateSource } from './certificate-source.ts';

export interface RunningWebhook {
  port: number;
  metricsPort: number | undefined;
  /** Not ready, wait `shutdownDelayMs`, stop accepting, drain, close. */
  stop(): Promise<void>;
}

export interface WebhookOverrides {
  /** A pre-filled view (tests of the HTTP layer); the default watches the cluster. */
  view?: ClusterView;
}

export async function runWebhook(config: WebhookConfig, logger: Logger, overrides: WebhookOverrides = {}): Promise<RunningWebhook> {
  const registry = createRegistry(true);
  const metrics = createWebhookMetrics(registry);

  const policy = await watchedPolicy(config.policyPath, {
    intervalMs: config.fileCheckIntervalMs,
    logger,
    onReload: (result) => { metrics.policyReloads.inc({ result }); },
  });

  const certificates = await openCertificateSource(config, logger);
  let certificate = certificates.initial;
  metrics.certificateExpiry.set(certificate.notAfter.getTime() / 1000);

  let watched: WatchedIndex | undefined;
  let view: ClusterView;
  if (overrides.view !== undefined) view = overrides.view;
  else {
    watched = new WatchedIndex({
      kubeConfig: loadKubeConfig(config.kubeconfig),
      namespace: config.namespace,
      istioApiVersion: config.istioApiVersion,
      logger,
      onRestart: (kind) => { metrics.cacheRestarts.inc({ resource: kind }); },
      onSynced: (kind) => { metrics.cacheSynced.set({ resource: kind }, 1); },
    });
    view = watched.index;
  }

  let stopping = false;
  const readiness = (): ProbeCheck => {
    const reasons: string[] = [];
    if (stopping) reasons.push('shutting down');
    if (watched !== undefined && !watched.synced()) reasons.push('caches not synced');
    if (certificate.notAfter.getTime() <= Date.now()) reasons.push(`serving certificate expired at ${certificate.notAfter.toISOString()}`);
    if (!certificates.trusted()) reasons.push("the serving certificate's CA is not in every webhook configuration yet");
    return { ok: reasons.length === 0, reasons };
  };

  const guard = new ConnectionGuard(connectionLimitsFor(config.memoryLimitBytes, config.maxConnections), {
    trustedNetworks: config.apiServerCidrs,
    onClose: (reason) => { metrics.connectionsClosed.inc({ reason }); },
  });
  metrics.connectionLimit.set(guard.limits.maxConnections);
  const budget = new BodyBudget(bodyBudgetFor(config.memoryLimitBytes, config.bodyBudgetBytes));
  metrics.bodyBudgetBytes.set(budget.totalBytes);
  const app = createApp({
    namespace: config.namespace,
    policy: () => policy.current(),
    view,
    readiness,
    registry,
    metrics,
    logger,
    bodyLimitBytes: config.bodyLimitBytes,
    budget,
    bodyTimeoutMs: config.bodyTimeoutMs,
    smallBodyTimeoutMs: config.smallBodyTimeoutMs,
    peers: guard,
    syncLeaseName: config.syncLeaseName,
  });
  const listenOptions = { host: config.host, keepAliveTimeoutMs: config.keepAliveTimeoutMs, headersTimeoutMs: config.headersTimeoutMs, requestTimeoutMs: config.requestTimeoutMs };
  const https = await listenHttps(app, certificate, { ...listenOptions, port: config.port, guard });
  let plain: Awaited<ReturnType<typeof listenHttp>> | undefined;
  if (config.metricsPort !== undefined) {
    const probes = express();
    probes.disable('x-powered-by');
    probeRoutes(probes, { readiness, registry });
    plain = await listenHttp(probes, { ...listenOptions, port: config.metricsPort });
  }
  logger.info({ port: https.port, metricsPort: plain?.port, namespace: config.namespace, policy: config.policyPath ?? '(built-in)' }, 'webhook listening');

  const stopCertWatch = certificates.watch({
    onLoad: (next) => {
      swapCertificate(https.server, next);
      certificate = next;
      metrics.certificateExpiry.set(next.notAfter.getTime() / 1000);
      metrics.certificateReloads.inc({ result: 'ok' });
      logger.info({ notAfter: next.notAfter.toISOString(), fingerprint: next.fingerprint }, 'serving certificate reloaded');
    },
    onError: (err) => {
      metrics.certificateReloads.inc({ result: 'error' });
      logger.error({ err }, 'serving certificate reload failed; keeping the current one');
    },
  });

  if (watched !== undefined) {
    void watched.start();
  }

  let stopped: Promise<void> | undefined;
  return {
    port: https.port,
    metricsPort: plain?.port,
    stop: () =>
      (stopped ??= (async () => {
        stopping = true;
        logger.info({ delayMs: config.shutdownDelayMs }, 'shutting down: not ready, then draining');
        await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
        stopCertWatch();
        policy.stop();
        await Promise.all([
          closeGracefully(https.server, config.drainTimeoutMs),
          plain ? closeGracefully(plain.server, config.drainTimeoutMs) : Promise.resolve(),
        ]);
        await watched?.stop();
        logger.info('webhook stopped');
      })()),
  };
}
