/**
 * The express application: routes, body limits and error mapping. Anything a client can
 * send gets an answer: malformed JSON, a wrong content type, an oversized body or JSON
 * that is not an AdmissionReview get a 4xx naming the problem; nothing reaches a handler
 * undecoded and nothing crashes the process.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { probeRoutes, type ProbeCheck } from '../http/probes.ts';
import type { ClusterView } from '../policy/cluster-view.ts';
import type { Policy } from '../policy/policy-file.ts';
import type { WebhookMetrics } from '../telemetry/metrics.ts';
import { decodeAdmissionReview, reviewResponse } from './admission.ts';
import { handleMutate, handleValidate, type HandlerOutcome } from './handlers.ts';

export interface AppDependencies {
  namespace: string;
  policy: () => Policy;
  view: ClusterView;
  readiness: () => ProbeCheck;
  registry: Registry;
  metrics: WebhookMetrics;
  logger: Logger;
  bodyLimitBytes: number;
  now?: () => Date;
}

type Handler = typeof handleMutate;

interface BodyParserError extends Error {
  type?: string;
  status?: number;
}

function problem(res: Response, status: number, message: string): void {
  res.status(status).type('application/json').send(JSON.stringify({ error: message }));
}

export function createApp(deps: AppDependencies): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  probeRoutes(app, deps);

  const now = deps.now ?? (() => new Date());
  const route = (path: '/mutate' | '/validate', handlerName: 'mutate' | 'validate', handler: Handler): void => {
    const requireJson = (req: Request, res: Response, next: NextFunction): void => {
      // Announced too large: refused now, and the connection closed, instead of reading
      // (and discarding) the whole body first as the body parser would.
      const announced = Number(req.get('content-length') ?? 0);
      if (announced > deps.bodyLimitBytes) {
        deps.metrics.badRequests.inc({ handler: handlerName, reason: 'too-large' });
        res.set('Connection', 'close');
        problem(res, 413, `body is larger than ${deps.bodyLimitBytes} bytes (Content-Length ${announced})`);
        return;
      }
      if (!req.is('application/json')) {
        deps.metrics.badRequests.inc({ handler: handlerName, reason: 'content-type' });
        problem(res, 415, `content type ${JSON.stringify(req.get('content-type') ?? '(none)')} is not supported; send application/json`);
        return;
      }
      next();
    };
    const json = express.json({ limit: deps.bodyLimitBytes, strict: true, type: () => true });
    app.post(path, requireJson, json, (req: Request, res: Response) => {
      const started = process.hrtime.bigint();
      const decoded = decodeAdmissionReview(req.body as unknown);
      if (!decoded.ok) {
        deps.metrics.badRequests.inc({ handler: handlerName, reason: 'not-admission-review' });
        problem(res, 400, decoded.message);
        return;
      }
      const { request } = decoded;
      let outcome: HandlerOutcome;
      try {
        outcome = handler(request, { policy: deps.policy(), namespace: deps.namespace, view: deps.view, now });
      } catch (err) {
        // A bug in a rule must not take the server down; the API server sees a 500 and,
        // with failurePolicy Fail, refuses the write, which is the safe direction.
        deps.logger.error({ err, uid: request.uid, handler: handlerName }, 'handler failed');
        problem(res, 500, 'internal error while evaluating the request');
        return;
      }
      res.json(reviewResponse(outcome.response));
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      deps.metrics.duration.observe({ handler: handlerName }, seconds);
      deps.metrics.requests.inc({ handler: handlerName, operation: request.operation, decision: outcome.decision });
      for (const v of outcome.violations) deps.metrics.violations.inc({ rule: v.rule });
      const obj = (request.object ?? request.oldObject) as { metadata?: { name?: unknown } } | undefined;
      deps.logger.info(
        {
          handler: handlerName,
          uid: request.uid,
          operation: request.operation,
          namespace: request.namespace,
          name: request.name ?? obj?.metadata?.name,
          user: request.userInfo.username,
          dryRun: request.dryRun ?? false,
          decision: outcome.decision,
          ownership: outcome.ownership,
          rules: outcome.violations.map((v) => v.rule),
          durationSeconds: seconds,
        },
        'admission',
      );
    });
    app.all(path, (_req, res) => {
      res.set('Allow', 'POST');
      problem(res, 405, `${path} accepts POST only`);
    });
  };
  route('/mutate', 'mutate', handleMutate);
  route('/validate', 'validate', handleValidate);

  app.use((_req: Request, res: Response) => {
    problem(res, 404, 'not found; the webhook serves POST /mutate, POST /validate, GET /healthz, /readyz, /metrics');
  });
  // express recognises an error handler by its four parameters.
  app.use((err: BodyParserError, req: Request, res: Response, _next: NextFunction) => {
    const handler = req.path.replace('/', '') || 'unknown';
    switch (err.type) {
      case 'entity.parse.failed':
        deps.metrics.badRequests.inc({ handler, reason: 'malformed-json' });
        problem(res, 400, `body is not valid JSON: ${err.message}`);
        return;
      case 'entity.too.large':
        deps.metrics.badRequests.inc({ handler, reason: 'too-large' });
        problem(res, 413, `body is larger than ${deps.bodyLimitBytes} bytes`);
        return;
      case 'encoding.unsupported':
      case 'charset.unsupported':
        deps.metrics.badRequests.inc({ handler, reason: 'encoding' });
        problem(res, 415, err.message);
        return;
      case 'request.aborted':
        return;
      default:
        if (typeof err.status === 'number' && err.status >= 400 && err.status < 500) {
          deps.metrics.badRequests.inc({ handler, reason: 'other' });
          problem(res, err.status, err.message);
          return;
        }
        deps.logger.error({ err, path: req.path }, 'request failed');
        problem(res, 500, 'internal error');
    }
  });
  return app;
}
