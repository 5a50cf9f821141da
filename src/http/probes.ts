/**
 * The routes every process serves for the kubelet and Prometheus: /healthz (liveness: fails
 * only when a restart would help), /readyz (readiness, with the reasons) and /metrics.
 */
import type express from 'express';
import type { Registry } from 'prom-client';

export interface ProbeCheck {
  ok: boolean;
  reasons: string[];
}

export interface ProbeDependencies {
  readiness: () => ProbeCheck;
  /** Unset: alive whenever the process answers. */
  liveness?: () => ProbeCheck;
  registry: Registry;
}

function answer(res: express.Response, check: ProbeCheck, failing: string): void {
  if (check.ok) res.type('text/plain').send('ok');
  else res.status(503).type('text/plain').send(`${failing}: ${check.reasons.join('; ')}`);
}

export function probeRoutes(app: express.Express, deps: ProbeDependencies): void {
  app.get('/healthz', (_req, res) => {
    answer(res, deps.liveness?.() ?? { ok: true, reasons: [] }, 'not alive');
  });
  app.get('/readyz', (_req, res) => {
    answer(res, deps.readiness(), 'not ready');
  });
  app.get('/metrics', async (_req, res) => {
    res.type(deps.registry.contentType).send(await deps.registry.metrics());
  });
}
