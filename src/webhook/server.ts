/**
 * The webhook's HTTPS listener: TLS 1.2+, keep-alive longer than the API server's idle
 * timeout (see http/serving.ts), its connections bounded (connection-guard.ts), and
 * certificate hot swap.
 */
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { RequestListener } from 'node:http';
import { SERVER_OPTIONS, answerClientError, listen, tune, type ListenOptions } from '../http/serving.ts';
import type { ConnectionGuard } from './connection-guard.ts';
import { TLS_OPTIONS, type LoadedCertificate } from './serving-cert.ts';

export async function listenHttps(app: RequestListener, cert: LoadedCertificate, options: ListenOptions & { guard?: ConnectionGuard }): Promise<{ server: HttpsServer; port: number }> {
  const { guard } = options;
  const handshakeTimeout = guard?.limits.handshakeTimeoutMs;
  const server = createHttpsServer({ ...SERVER_OPTIONS, ...TLS_OPTIONS, ...(handshakeTimeout === undefined ? {} : { handshakeTimeout }), cert: cert.cert, key: cert.key }, guard === undefined ? app : guard.wrap(app));
  guard?.attach(server);
  tune(server, options);
  // A client that opens TLS and sends garbage gets its socket closed, not a crash.
  server.on('tlsClientError', () => undefined);
  server.on('clientError', answerClientError);
  return { server, port: await listen(server, options.host, options.port) };
}

export function swapCertificate(server: HttpsServer, cert: LoadedCertificate): void {
  server.setSecureContext({ ...TLS_OPTIONS, cert: cert.cert, key: cert.key });
}
