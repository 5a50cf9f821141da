/**
 * Plain HTTP listening shared by every process (the sync daemon's probes and metrics, the
 * webhook's metrics port): keep-alive longer than the caller's idle timeout, bounded header
 * and request times, and a graceful stop (stop accepting, drain, close what is left).
 */
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { DEFAULT_HEADERS_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from '../config/webhook.ts';

export interface ListenOptions {
  host: string;
  port: number;
  /** How long an idle keep-alive connection stays open (longer than the caller's own idle timeout). */
  keepAliveTimeoutMs: number;
  /** How long a client may take to send a request's headers (counted from their first byte). */
  headersTimeoutMs?: number;
  /** How long a client may take to send a whole request. */
  requestTimeoutMs?: number;
}

/**
 * Server options fixed at creation: how often Node checks the header and request timeouts
 * (its default, 30 s, would let a slow client hold a connection that much longer).
 */
export const SERVER_OPTIONS = { connectionsCheckingInterval: 1_000 } as const;

/**
 * Since Node 18 the header and request timeouts run from the first byte of a request, not
 * from when a connection went idle: an idle keep-alive connection outlives them and is
 * reused, while a client that dribbles its headers is answered 408 and cut off. So they are
 * short, and independent of the keep-alive.
 */
export function tune(server: HttpServer | HttpsServer, options: ListenOptions): void {
  server.keepAliveTimeout = options.keepAliveTimeoutMs;
  server.headersTimeout = options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
  server.requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
}

/**
 * A client error (a request that timed out, headers too large, bytes that are not HTTP)
 * gets the status Node would send, then the connection is closed; a socket already gone is
 * left alone. (A listener replaces Node's own answer, so it has to give one.)
 *
 * An HTTPS server reports a failed TLS handshake here too (a timed-out one included), and
 * destroys the socket only when no listener takes the error: a socket whose handshake did not
 * finish has no HTTP to answer in, and is destroyed at once, or a handshake that never finishes
 * would keep its connection for good.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  // TLS errors carry Node's ERR_TLS_ codes (a handshake timeout) or OpenSSL's ERR_SSL_ ones.
  const tls = error.code !== undefined && /^ERR_(TLS|SSL)_/.test(error.code);
  if (error.code === 'ECONNRESET' || tls || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : error.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
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
  const server = createHttpServer(SERVER_OPTIONS, app);
  tune(server, options);
  server.on('clientError', answerClientError);
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
