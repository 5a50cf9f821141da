/**
 * POST /mutate and POST /validate on Node's own request and response, the one hot path of the
 * webhook: every WorkloadEntry write in the cluster waits on it. express stays for everything
 * else (probes, metrics, 404); on this path its router, request decoration and body parser
 * cost more than the rules do (see docs/benchmarks.md). Anything a client can send still gets
 * an answer: a wrong method, content type, charset or encoding, an oversized or malformed
 * body, or JSON that is not an AdmissionReview get a 4xx naming the problem.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ClusterView } from '../policy/cluster-view.ts';
import type { Policy } from '../policy/policy-file.ts';
import type { WebhookMetrics } from '../observability/metrics.ts';
import { decodeAdmissionReview, reviewResponse } from './admission.ts';
import { SMALL_REVIEW_BYTES, type BodyBudget, type BodyReservation } from './body-budget.ts';
import { handleMutate, handleValidate, type HandlerOutcome } from './handlers.ts';

export interface AdmissionRouteDependencies {
  namespace: string;
  policy: () => Policy;
  view: ClusterView;
  metrics: WebhookMetrics;
  logger: Logger;
  bodyLimitBytes: number;
  /** Bodies held at once (see body-budget.ts). */
  budget: BodyBudget;
  /** The sync daemon's Lease in the namespace, whose term fences its writes. */
  syncLeaseName?: string;
  /** A body must have arrived this long after its headers. */
  bodyTimeoutMs: number;
  /** ...and a small one (an AdmissionReview of a WorkloadEntry, which the API server sends in one go) this long. */
  smallBodyTimeoutMs: number;
  /** Who the API server is (connection-guard.ts): told of every peer that sent a real review, and asked whether a peer is trusted. */
  peers?: { trust(peer: string | undefined): void; isTrusted(peer: string | undefined): boolean };
  now?: () => Date;
}

/** Seconds the API server's client waits before retrying a shed request (it honours Retry-After on 429). */
const RETRY_AFTER_SECONDS = '1';

type HandlerName = 'mutate' | 'validate';
const HANDLERS = { mutate: handleMutate, validate: handleValidate } as const;
const PATHS: Readonly<Record<string, HandlerName>> = { '/mutate': 'mutate', '/validate': 'validate' };

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function problem(res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify({ error: message }), headers);
}

/** What is wrong with the request's headers for a JSON body, or undefined. */
function headerProblem(req: IncomingMessage): { status: number; reason: string; message: string } | undefined {
  const type = req.headers['content-type'] ?? '';
  const [media = '', ...parameters] = type.split(';').map((p) => p.trim());
  if (media.toLowerCase() !== 'application/json') {
    return { status: 415, reason: 'content-type', message: `content type ${JSON.stringify(type === '' ? '(none)' : type)} is not supported; send application/json` };
  }
  for (const parameter of parameters) {
    const [name = '', value = ''] = parameter.split('=').map((p) => p.trim().replace(/^"|"$/g, ''));
    if (name.toLowerCase() === 'charset' && !['utf-8', 'utf8'].includes(value.toLowerCase())) {
      return { status: 415, reason: 'encoding', message: `unsupported charset "${value.toUpperCase()}"; send UTF-8` };
    }
  }
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
    return { status: 415, reason: 'encoding', message: `content encoding ${JSON.stringify(encoding)} is not supported; send the body uncompressed` };
  }
  return undefined;
}

/**
 * The body, up to `limit` bytes; 'too-large' when it sends more (the caller answers 413),
 * 'over-budget' when `reservation` cannot grow to hold what has arrived (429), 'too-slow'
 * when it has not all arrived within `timeoutMs` (408), undefined when the client went away.
 */
function readBody(req: IncomingMessage, limit: number, reservation: BodyReservation, timeoutMs: number, onHeld: () => void): Promise<Buffer | 'too-large' | 'over-budget' | 'too-slow' | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stopReading = (): void => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      req.pause();
    };
    const timer = setTimeout(() => {
      stopReading();
      resolve('too-slow');
    }, timeoutMs);
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stopReading();
        resolve('too-large');
        return;
      }
      if (!reservation.growTo(size)) {
        stopReading();
        resolve('over-budget');
        return;
      }
      onHeld();
      chunks.push(chunk);
    });
    req.once('end', () => {
      clearTimeout(timer);
      resolve(size > limit ? 'too-large' : Buffer.concat(chunks, size));
    });
    req.once('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    // The client went away before sending it all.
    req.once('close', () => {
      clearTimeout(timer);
      if (!req.complete) resolve(undefined);
    });
  });
}

/**
 * A request listener that answers the admission paths and hands every other request to
 * `fallback`.
 */
export function admissionRoutes(deps: AdmissionRouteDependencies, fallback: RequestListener): RequestListener {
  const now = deps.now ?? (() => new Date());
  const bad = (res: ServerResponse, handler: HandlerName, status: number, reason: string, message: string, headers: Record<string, string> = {}): void => {
    deps.metrics.badRequests.inc({ handler, reason });
    problem(res, status, message, headers);
  };

  const admit = (handlerName: HandlerName, parsed: unknown, req: IncomingMessage, res: ServerResponse): void => {
    // Measured from a whole, parsed body: the webhook's own work, not the client's upload.
    const started = process.hrtime.bigint();
    const decoded = decodeAdmissionReview(parsed);
    if (!decoded.ok) {
      bad(res, handlerName, 400, 'not-admission-review', decoded.message);
      return;
    }
    deps.peers?.trust(req.socket.remoteAddress);
    const { request } = decoded;
    let outcome: HandlerOutcome;
    try {
      outcome = HANDLERS[handlerName](request, { policy: deps.policy(), namespace: deps.namespace, view: deps.view, now, ...(deps.syncLeaseName === undefined ? {} : { syncLeaseName: deps.syncLeaseName }) });
    } catch (err) {
      // A bug in a rule must not take the server down; the API server sees a 500 and,
      // with failurePolicy Fail, refuses the write, which is the safe direction.
      deps.logger.error({ err, uid: request.uid, handler: handlerName }, 'handler failed');
      problem(res, 500, 'internal error while evaluating the request');
      return;
    }
    send(res, 200, JSON.stringify(reviewResponse(outcome.response)));
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
  };

  return (req, res) => {
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const handlerName = PATHS[query < 0 ? url : url.slice(0, query)];
    if (handlerName === undefined) {
      fallback(req, res);
      return;
    }
    if (req.method !== 'POST') {
      problem(res, 405, `${url} accepts POST only`, { allow: 'POST' });
      return;
    }
    // Announced too large: refused now, and the connection closed, instead of reading (and
    // discarding) the whole body first.
    const announced = Number(req.headers['content-length'] ?? 0);
    if (announced > deps.bodyLimitBytes) {
      bad(res, handlerName, 413, 'too-large', `body is larger than ${deps.bodyLimitBytes} bytes (Content-Length ${announced})`, { connection: 'close' });
      return;
    }
    const wrong = headerProblem(req);
    if (wrong !== undefined) {
      bad(res, handlerName, wrong.status, wrong.reason, wrong.message);
      return;
    }
    // Bytes are reserved as they arrive, never as announced (a header alone holds nothing), in
    // the budget of the whole server and of this peer. Shed when they do not fit, and the
    // connection closed rather than the rest read to keep it.
    const overBudget = (): void => {
      bad(res, handlerName, 429, 'over-budget', `the webhook holds ${deps.budget.totalBytes} bytes of request bodies at most and is full; retry`, { 'retry-after': RETRY_AFTER_SECONDS, connection: 'close' });
    };
    const peer = req.socket.remoteAddress;
    const reservation = deps.budget.tryReserve(0, { peer, announcedBytes: announced, trusted: deps.peers?.isTrusted(peer) ?? false });
    if (reservation === undefined) {
      overBudget();
      return;
    }
    const release = (): void => {
      reservation.release();
      deps.metrics.bodyBytesInFlight.set(deps.budget.inUseBytes);
    };
    // A small body is sent at once by the API server: it gets a short deadline, so a client that
    // announces one and sends it slowly cannot hold a connection (and its bytes) for long.
    const deadlineMs = announced > 0 && announced <= SMALL_REVIEW_BYTES ? deps.smallBodyTimeoutMs : deps.bodyTimeoutMs;
    const held = (): void => { deps.metrics.bodyBytesInFlight.set(deps.budget.inUseBytes); };
    void readBody(req, deps.bodyLimitBytes, reservation, deadlineMs, held).then((body) => {
      if (body === undefined) {
        release();
        return;
      }
      if (typeof body === 'string') {
        release();
        if (body === 'too-large') bad(res, handlerName, 413, 'too-large', `body is larger than ${deps.bodyLimitBytes} bytes`, { connection: 'close' });
        else if (body === 'over-budget') overBudget();
        else bad(res, handlerName, 408, 'too-slow', `body did not arrive within ${deadlineMs} ms`, { connection: 'close' });
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch (error) {
        bad(res, handlerName, 400, 'malformed-json', `body is not valid JSON: ${(error as Error).message}`);
        return;
      } finally {
        // The buffer is garbage once parsed; the parsed review lives only as long as this call.
        release();
      }
      admit(handlerName, parsed, req, res);
    });
  };
}
