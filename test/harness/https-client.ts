/** A small HTTPS client for talking to the webhook as the API server does. */
import { Agent, request } from 'node:https';

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Local port of the TCP connection used, to tell reused connections from new ones. */
  localPort: number | undefined;
  peerCertificateFingerprint: string | undefined;
}

export interface RequestOptions {
  method?: string;
  path: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  agent?: Agent;
  ca: string | Buffer;
  minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
}

export function httpsRequest(port: number, options: RequestOptions): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: options.headers,
        agent: options.agent ?? false,
        ca: options.ca,
        servername: 'localhost',
        minVersion: options.minVersion,
        maxVersion: options.maxVersion,
      },
      (res) => {
        // Read the socket now: a keep-alive agent takes it back once the body has ended.
        const socket = res.socket as unknown as import('node:tls').TLSSocket;
        const localPort = socket.localPort;
        const peerCertificateFingerprint = socket.getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), localPort, peerCertificateFingerprint });
        });
      },
    );
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

export function postJson(port: number, path: string, body: unknown, ca: string | Buffer, agent?: Agent): Promise<HttpResult> {
  return httpsRequest(port, {
    method: 'POST',
    path,
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
    ca,
    ...(agent ? { agent } : {}),
  });
}
