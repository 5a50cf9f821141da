import { createServer, connect, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.ts';

let upstream: Server | undefined;
let proxy: TcpProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await new Promise<void>((resolve) => (upstream === undefined ? resolve() : upstream.close(() => { resolve(); })));
});

describe('the test harness TCP proxy', () => {
  // A replica's Redis and API server connections go through it; the soak's partition fault
  // freezes it while clients give up and reconnect.
  it('a client that resets while held by a frozen proxy is dropped, not an uncaught ECONNRESET, and thawing connects only the live ones', async () => {
    let upstreamConnections = 0;
    upstream = createServer((socket) => { upstreamConnections++; socket.end('hello'); });
    await new Promise<void>((resolve) => upstream!.listen(0, '127.0.0.1', resolve));
    const port = (upstream.address() as { port: number }).port;
    proxy = await startTcpProxy({ host: '127.0.0.1', port });
    proxy.freeze();
    const doomed = connect(proxy.port, '127.0.0.1');
    await new Promise<void>((resolve) => doomed.once('connect', resolve));
    await expect.poll(() => proxy!.accepted).toBe(1);
    doomed.write('x'); // something for the held side to read when it fails
    doomed.resetAndDestroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const live = connect(proxy.port, '127.0.0.1');
    let received = '';
    live.on('data', (c: Buffer) => (received += c.toString()));
    await expect.poll(() => proxy!.accepted).toBe(2);
    proxy.thaw();
    await expect.poll(() => received).toBe('hello');
    expect(upstreamConnections).toBe(1);
  });
});
