/**
 * A fault injector in front of a real server: a TCP pass-through on a free 127.0.0.1 port
 * that can be frozen (connections stay open, bytes stop moving both ways: a server that
 * hangs, as far as a client can tell) and thawed. TLS passes through untouched, so a client
 * talks to the real API server through it with the real certificate.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { parse, stringify } from 'yaml';

export interface TcpProxy {
  port: number;
  /** Client connections accepted so far. */
  readonly accepted: number;
  freeze(): void;
  thaw(): void;
  /** Closes every connection now (a network that broke): clients see it close and reconnect. */
  dropConnections(): void;
  stop(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let frozen = false;
  const pairs = new Set<[Socket, Socket]>();
  const held: (() => void)[] = [];
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted++;
    const connect = (): void => {
      if (client.destroyed) return; // gone while held
      const upstream = createConnection(target);
      const pair: [Socket, Socket] = [client, upstream];
      pairs.add(pair);
      client.pipe(upstream);
      upstream.pipe(client);
      const close = (): void => {
        pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
      if (frozen) {
        client.pause();
        upstream.pause();
      }
    };
    if (frozen) {
      // A client reset while held would otherwise be an 'error' with no listener: uncaught.
      client.on('error', () => client.destroy());
      client.pause();
      held.push(connect);
    } else connect();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address !== 'object') throw new Error('proxy has no port');
  return {
    port: address.port,
    get accepted() {
      return accepted;
    },
    freeze: () => {
      frozen = true;
      for (const [a, b] of pairs) {
        a.pause();
        b.pause();
        // pipe() resumes a paused source on 'drain'; unpipe so nothing moves until thawed.
        a.unpipe(b);
        b.unpipe(a);
      }
    },
    dropConnections: () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
    },
    thaw: () => {
      frozen = false;
      for (const [a, b] of pairs) {
        a.pipe(b);
        b.pipe(a);
        a.resume();
        b.resume();
      }
      for (const connect of held.splice(0)) connect();
    },
    stop: async () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => { resolve(); }));
    },
  };
}

/** A copy of a kubeconfig whose clusters are reached through a proxy in front of their server. */
export async function kubeconfigThroughProxy(kubeconfig: string): Promise<{ kubeconfig: string; proxy: TcpProxy }> {
  const config = parse(await readFile(kubeconfig, 'utf8')) as { clusters: { cluster: { server: string } }[] };
  const server = new URL(config.clusters[0]?.cluster.server ?? '');
  const proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port) });
  for (const c of config.clusters) c.cluster.server = `https://127.0.0.1:${proxy.port}`;
  const path = `${kubeconfig}.proxied-${proxy.port}`;
  await writeFile(path, stringify(config));
  return { kubeconfig: path, proxy };
}
