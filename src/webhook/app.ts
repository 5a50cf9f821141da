/**
 * The webhook's request listener: the admission paths on Node's own request and response
 * (admission-route.ts, the hot path), and express for the rest (probes, metrics, a 404 that
 * names what is served).
 */
import type { RequestListener } from 'node:http';
import express from 'express';
import type { Registry } from 'prom-client';
import { probeRoutes, type ProbeCheck } from '../http/probes.ts';
import { admissionRoutes, type AdmissionRouteDependencies } from './admission-route.ts';

export interface AppDependencies extends AdmissionRouteDependencies {
  readiness: () => ProbeCheck;
  registry: Registry;
}

export function createApp(deps: AppDependencies): RequestListener {
  const rest = express();
  rest.disable('x-powered-by');
  rest.set('etag', false);
  probeRoutes(rest, deps);
  rest.use((_req, res) => {
    res.status(404).type('application/json').send(JSON.stringify({ error: 'not found; the webhook serves POST /mutate, POST /validate, GET /healthz, /readyz, /metrics' }));
  });
  return admissionRoutes(deps, rest);
}
