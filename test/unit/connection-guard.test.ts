/**
 * The webhook's connections are bounded (src/webhook/connection-guard.ts), over real HTTPS and
 * TCP from loopback addresses of their own (each a peer): in total, per peer, in time before a
 * handshake finishes and before a first request, and between requests for a peer that has sent
 * no real review. Small limits, so each one is met in a few connections.
 */
import type { Server as HttpsServer } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { ConnectionGuard, connectionLimitsFor, type ConnectionClosure } from '../../src/webhook/connection-guard.ts';
import { listenHttps } from '../../src/webhook/server.ts';

const ca = createCertificateAuthority('guard-ca', 1);
const serving = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 1 });
const closed: ConnectionClosure[] = [];
const guard = new ConnectionGuard(
  { maxConnections: 12, perPeer: 3, perTrustedPeer: 6, untrustedTotal: 12, handshakeTimeoutMs: 400, firstRequestMs: 400, untrustedIdleMs: 400, trustTtlMs: 60_000 },
  { onClose: (why) => { closed.push(why); } },
);
let server: HttpsServer;
let port = 0;
const sockets: Socket[] = [];

beforeAll(async () => {
  // /trust stands for a real review: the admission route trusts the peer that sent one.
  ({ server, port } = await listenHttps(
    (req, res) => {
      if (req.url === '/trust') guard.trust(req.socket.remoteAddress);
      res.end('ok');
    },
    { cert: serving.cert, key: serving.key, notAfter: new Date(Date.now() + 86_400_000) } as never,
    { host: '127.0.0.1', port: 0, keepAliveTimeoutMs: 60_000, guard },
  ));
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => { resolve(); }));
});

/** A TLS connection from `peer`; resolves with it once the handshake is done, or undefined when it was closed first. */
function tlsFrom(peer: string, to = port): Promise<TLSSocket | undefined> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port: to, localAddress: peer }), ca: ca.cert, servername: 'localhost' });
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.once('secureConnect', () => { resolve(socket); });
    socket.once('close', () => { resolve(undefined); });
  });
}

/** One request on `socket`; resolves when its answer arrives. */
function ask(socket: TLSSocket, path: string): Promise<string> {
  return new Promise((resolve) => {
    socket.once('data', (d: Buffer) => { resolve(d.toString()); });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

const closedWithin = (socket: Socket, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    if (socket.destroyed) return resolve(true);
    const timer = setTimeout(() => { resolve(false); }, ms);
    socket.once('close', () => { clearTimeout(timer); resolve(true); });
  });

describe('connections are bounded', () => {
  it('per peer: an untrusted peer gets 3, the rest are closed at once; another peer is not affected', async () => {
    const mine = await Promise.all(Array.from({ length: 5 }, () => tlsFrom('127.0.4.1')));
    expect(mine.filter((s) => s !== undefined)).toHaveLength(3);
    expect(closed.filter((c) => c === 'per-peer')).toHaveLength(2);
    expect(await tlsFrom('127.0.4.2')).toBeDefined();
    for (const socket of mine) socket?.destroy();
  });

  it('a peer that has sent a real review may open more (the API server opens one per call)', async () => {
    const first = await tlsFrom('127.0.4.3');
    expect(await ask(first!, '/trust')).toContain('200 OK');
    const more = await Promise.all(Array.from({ length: 5 }, () => tlsFrom('127.0.4.3')));
    expect(more.filter((s) => s !== undefined)).toHaveLength(5);
    expect(guard.connectionsFrom('127.0.4.3')).toBe(6);
    for (const socket of [first, ...more]) socket?.destroy();
  });

  it('a TLS handshake that does not finish is closed after the handshake timeout', async () => {
    const socket = netConnect({ host: '127.0.0.1', port, localAddress: '127.0.4.4' });
    sockets.push(socket);
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => { resolve(); }));
    // A TLS record header, and nothing after it.
    socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
    expect(await closedWithin(socket, 2_000)).toBe(true);
    expect(closed).toContain('handshake-timeout');
  });

  it('a connection that sends no request after its handshake is closed', async () => {
    const before = closed.filter((c) => c === 'no-request').length;
    const socket = await tlsFrom('127.0.4.5');
    expect(await closedWithin(socket!, 2_000)).toBe(true);
    expect(closed.filter((c) => c === 'no-request').length).toBe(before + 1);
  });

  it("an idle keep-alive connection is closed unless its peer has sent a real review", async () => {
    const untrusted = await tlsFrom('127.0.4.6');
    expect(await ask(untrusted!, '/other')).toContain('200 OK');
    expect(await closedWithin(untrusted!, 2_000)).toBe(true);
    expect(closed).toContain('idle-untrusted');
    const trusted = await tlsFrom('127.0.4.7');
    expect(await ask(trusted!, '/trust')).toContain('200 OK');
    // Kept alive past the untrusted idle time, for the server's keep-alive, and reused.
    expect(await closedWithin(trusted!, 1_500)).toBe(false);
    expect(await ask(trusted!, '/again')).toContain('200 OK');
    trusted?.destroy();
  });

  it('in total: past maxConnections a connection is dropped at accept', async () => {
    const before = closed.filter((c) => c === 'total').length;
    const peers = ['127.0.5.1', '127.0.5.2', '127.0.5.3', '127.0.5.4', '127.0.5.5'];
    const opened = await Promise.all(peers.flatMap((peer) => [tlsFrom(peer), tlsFrom(peer), tlsFrom(peer)]));
    expect(opened.filter((s) => s !== undefined).length).toBeLessThanOrEqual(12);
    expect(closed.filter((c) => c === 'total').length).toBeGreaterThan(before);
    for (const socket of opened) socket?.destroy();
  });
});

describe("with the API server's networks given", () => {
  // 127.0.6.0/24 stands for the API server; everyone else is untrusted, whatever they send.
  const closedHere: ConnectionClosure[] = [];
  const networkGuard = new ConnectionGuard(
    { maxConnections: 20, perPeer: 3, perTrustedPeer: 8, untrustedTotal: 6, handshakeTimeoutMs: 400, firstRequestMs: 400, untrustedIdleMs: 400, trustTtlMs: 60_000 },
    { trustedNetworks: ['127.0.6.0/24'], onClose: (why) => { closedHere.push(why); } },
  );
  let networkServer: HttpsServer;
  let networkPort = 0;

  beforeAll(async () => {
    ({ server: networkServer, port: networkPort } = await listenHttps(
      (req, res) => {
        if (req.url === '/trust') networkGuard.trust(req.socket.remoteAddress);
        res.end('ok');
      },
      { cert: serving.cert, key: serving.key, notAfter: new Date(Date.now() + 86_400_000) } as never,
      { host: '127.0.0.1', port: 0, keepAliveTimeoutMs: 60_000, guard: networkGuard },
    ));
  });

  afterAll(async () => {
    networkServer.closeAllConnections();
    await new Promise<void>((resolve) => networkServer.close(() => { resolve(); }));
  });

  it('untrusted peers together hold at most untrustedTotal; the API server still gets its connections', async () => {
    const attackers = await Promise.all(['127.0.7.1', '127.0.7.2', '127.0.7.3'].flatMap((peer) => [tlsFrom(peer, networkPort), tlsFrom(peer, networkPort), tlsFrom(peer, networkPort)]));
    expect(attackers.filter((s) => s !== undefined)).toHaveLength(6);
    expect(networkGuard.untrustedOpen).toBe(6);
    expect(closedHere.filter((c) => c === 'untrusted-total')).toHaveLength(3);
    const apiServer = await Promise.all(Array.from({ length: 8 }, () => tlsFrom('127.0.6.9', networkPort)));
    expect(apiServer.filter((s) => s !== undefined)).toHaveLength(8);
    for (const socket of [...attackers, ...apiServer]) socket?.destroy();
  });

  it('a peer outside them that sends a review earns nothing: its idle connection is closed, it keeps its per-peer limit', async () => {
    // The last test's connections, closed by the client, are counted out as the server sees them close.
    await expect.poll(() => networkGuard.untrustedOpen).toBe(0);
    const forger = await tlsFrom('127.0.7.9', networkPort);
    expect(await ask(forger!, '/trust')).toContain('200 OK');
    expect(await closedWithin(forger!, 2_000)).toBe(true);
    expect(closedHere).toContain('idle-untrusted');
    const more = await Promise.all(Array.from({ length: 5 }, () => tlsFrom('127.0.7.9', networkPort)));
    expect(more.filter((s) => s !== undefined)).toHaveLength(3);
    for (const socket of more) socket?.destroy();
  });

  it("the API server's idle connection is kept alive from its first request", async () => {
    const socket = await tlsFrom('127.0.6.10', networkPort);
    expect(await ask(socket!, '/other')).toContain('200 OK');
    expect(await closedWithin(socket!, 1_500)).toBe(false);
    socket?.destroy();
  });
});

describe('the limits for a pod', () => {
  it('are sized from the memory limit: an eighth at 80 KiB a connection, within 256 and 4,096', () => {
    const MiB = 1024 * 1024;
    expect(connectionLimitsFor(320 * MiB)).toMatchObject({ maxConnections: 512, perPeer: 32, perTrustedPeer: 256, untrustedTotal: 384, handshakeTimeoutMs: 5_000 });
    expect(connectionLimitsFor(320 * MiB, 100)).toMatchObject({ maxConnections: 100, perTrustedPeer: 50, untrustedTotal: 75 });
    expect(connectionLimitsFor(64 * MiB).maxConnections).toBe(256);
    expect(connectionLimitsFor(8192 * MiB).maxConnections).toBe(4096);
    expect(connectionLimitsFor(0).maxConnections).toBe(1024);
  });
});
