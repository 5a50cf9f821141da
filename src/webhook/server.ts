/**
 * The HTTPS listener and its lifecycle: TLS 1.2+, keep-alive longer than the API server's
 * idle timeout, certificate hot swap, and a graceful stop (not ready first, then stop
 * accepting, drain in-flight requests, close idle connections).
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';
import { TLS_OPTIONS, type LoadedCertificate } from './serving-cert.ts';

export interface ListenOptions {
  host: string;
  port: number;
  keepAliveTimeoutMs: number;
}

function tune(server: HttpServer | HttpsServer, keepAliveTimeoutMs: number): void {
  server.keepAliveTimeout = keepAliveTimeoutMs;
  // Node requires headersTimeout > keepAliveTimeout, or a reused idle socket can be cut
  // while the next request's headers are in flight.
  server.headersTimeout = keepAliveTimeoutMs + 1_000;
  server.requestTimeout = keepAliveTimeoutMs + 5_000;
}

async function listen(server: HttpServer | HttpsServer, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

export async function listenHttps(app: RequestListener, cert: LoadedCertificate, options: ListenOptions): Promise<{ server: HttpsServer; port: number }> {
  const server = createHttpsServer({ ...TLS_OPTIONS, cert: cert.cert, key: cert.key }, app);
  tune(server, options.keepAliveTimeoutMs);
  // A client that opens TLS and sends garbage gets its socket closed, not a crash.
  server.on('tlsClientError', () => undefined);
  server.on('clientError', (_err, socket) => socket.destroy());
  return { server, port: await listen(server, options.host, options.port) };
}

export async function listenHttp(app: RequestListener, options: ListenOptions): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer(app);
  tune(server, options.keepAliveTimeoutMs);
  server.on('clientError', (_err, socket) => socket.destroy());
  return { server, port: await listen(server, options.host, options.port) };
}

export function swapCertificate(server: HttpsServer, cert: LoadedCertificate): void {
  server.setSecureContext({ ...TLS_OPTIONS, cert: cert.cert, key: cert.key });
}

/** Stops accepting, lets in-flight requests finish within `drainTimeoutMs`, then closes what is left. */
export async function closeGracefully(server: HttpServer | HttpsServer, drainTimeoutMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => { resolve(); }));
  server.closeIdleConnections();
  // Connections that finish a request while draining are closed right after their response.
  const idleSweep = setInterval(() => { server.closeIdleConnections(); }, 100);
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, drainTimeoutMs).unref());
  await Promise.race([closed, timeout]);
  clearInterval(idleSweep);
  server.closeAllConnections();
  await closed;
}
