/**
 * Plain HTTP listening shared by every process (the sync daemon's probes and metrics, the
 * webhook's metrics port): keep-alive longer than the caller's idle timeout, bounded header
 * and request times, and a graceful stop (stop accepting, drain, close what is left).
 */
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface ListenOptions {
  host: string;
  port: number;
  keepAliveTimeoutMs: number;
}

export function tune(server: HttpServer | HttpsServer, keepAliveTimeoutMs: number): void {
  server.keepAliveTimeout = keepAliveTimeoutMs;
  // Node requires headersTimeout > keepAliveTimeout, or a reused idle socket can be cut
  // while the next request's headers are in flight.
  server.headersTimeout = keepAliveTimeoutMs + 1_000;
  server.requestTimeout = keepAliveTimeoutMs + 5_000;
}

export async function listen(server: HttpServer | HttpsServer, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

export async function listenHttp(app: RequestListener, options: ListenOptions): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer(app);
  tune(server, options.keepAliveTimeoutMs);
  server.on('clientError', (_err, socket) => socket.destroy());
  return { server, port: await listen(server, options.host, options.port) };
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
