/**
 * What a connection costs, and how long each kind is kept: the numbers the webhook's connection
 * limits are picked from (src/webhook/connection-guard.ts, docs/benchmarks.md). Three servers,
 * each its own process with the chart's heap flags:
 *   - baseline: a bare Node HTTPS server with the webhook's TLS settings and Node's defaults
 *     (what the webhook was before its connections were bounded);
 *   - webhook, limits lifted: the real webhook with --max-connections 100000, so every
 *     connection is accepted and its cost measured;
 *   - webhook, chart limits: the real webhook sized for the chart's 320 MiB (512 connections,
 *     384 for untrusted peers, 32 each).
 * For each, BENCH_CONNECTIONS (2,000) connections of each kind, from 128 loopback addresses
 * (127.0.1.1 to 127.0.1.128, each a peer): the resident memory added per accepted connection,
 * and how many are still open 15 s later. No API server addresses are given, so a peer that
 * has sent a real review is trusted (keep-alive) as the webhook does without them.
 *   - tcp-idle: a TCP connection that sends nothing (not even a TLS ClientHello);
 *   - tls-stalled: the first five bytes of a TLS record, then nothing (a handshake that never finishes);
 *   - tls-idle: a finished TLS handshake, then no request;
 *   - keep-alive: one real AdmissionReview answered, then the connection left idle.
 *   npm run bench:webhook-connections
 * Connections go to 127.0.0.1 only and are closed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, createServingCertificate } from '../src/certs/authority.ts';
import { connectionLimitsFor } from '../src/webhook/connection-guard.ts';
import { admissionReview } from './support/admission-review.ts';

const COUNT = Number(process.env.BENCH_CONNECTIONS ?? 2000);
const PEERS = 128;
const HOLD_MS = 15_000;
const CHART_HEAP_FLAGS = ['--max-old-space-size=128', '--max-semi-space-size=16'];
const MiB = 1024 * 1024;

type Kind = 'tcp-idle' | 'tls-stalled' | 'tls-idle' | 'keep-alive';
const KINDS: Kind[] = ['tcp-idle', 'tls-stalled', 'tls-idle', 'keep-alive'];

interface Target {
  name: string;
  start(): { child: ChildProcess };
}

/** A bare Node HTTPS server: Node's defaults, the webhook's TLS floor, an answer for any request. */
const BASELINE_SERVER = `
import { createServer } from 'node:https';
const server = createServer({ key: process.env.KEY, cert: process.env.CERT, minVersion: 'TLSv1.2' }, (req, res) => { req.resume(); req.on('end', () => res.end('{}')); });
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port, ca: process.env.CA })));
`;

const ca = createCertificateAuthority('bench-ca', 1);
const serving = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 1 });
const webhookProcess = fileURLToPath(new URL('../test/harness/webhook-process.ts', import.meta.url));

const TARGETS: Target[] = [
  { name: 'baseline: Node defaults', start: () => ({ child: spawn(process.execPath, [...CHART_HEAP_FLAGS, '--input-type=module', '-e', BASELINE_SERVER], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, KEY: serving.key, CERT: serving.cert, CA: ca.cert } }) }) },
  { name: 'webhook, limits lifted', start: () => ({ child: spawn(process.execPath, [...CHART_HEAP_FLAGS, webhookProcess], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, EDGE_REGISTRAR_MAX_CONNECTIONS: '100000' } }) }) },
  { name: 'webhook, chart limits (320 MiB)', start: () => ({ child: spawn(process.execPath, [...CHART_HEAP_FLAGS, webhookProcess], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, EDGE_REGISTRAR_MAX_CONNECTIONS: String(connectionLimitsFor(320 * MiB).maxConnections) } }) }) },
];

async function rssKiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);
}

/** One connection of `kind` from `localAddress`; resolves once it is in the state the kind names (or was refused). */
function open(kind: Kind, port: number, caCert: string, localAddress: string): Promise<{ socket: Socket; accepted: boolean }> {
  return new Promise((resolve) => {
    const done = (socket: Socket, accepted: boolean): void => { resolve({ socket, accepted }); };
    const timer = setTimeout(() => { done(socket, false); }, 5_000);
    let socket: Socket;
    if (kind === 'tcp-idle' || kind === 'tls-stalled') {
      socket = netConnect({ host: '127.0.0.1', port, localAddress });
      socket.on('error', () => { clearTimeout(timer); done(socket, false); });
      socket.once('connect', () => {
        // A TLS record header (handshake, TLS 1.0, 512 bytes to come) and nothing after it.
        if (kind === 'tls-stalled') socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
        setTimeout(() => { clearTimeout(timer); done(socket, !socket.destroyed); }, 50);
      });
      return;
    }
    const tls = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port, localAddress }), ca: caCert, servername: 'localhost' });
    socket = tls;
    tls.on('error', () => { clearTimeout(timer); done(tls, false); });
    tls.once('secureConnect', () => {
      if (kind === 'tls-idle') { clearTimeout(timer); done(tls, true); return; }
      const body = admissionReview(`bench-${localAddress}-${Math.random()}`, 'CREATE');
      tls.write(`POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      tls.once('data', () => { clearTimeout(timer); done(tls, true); });
    });
  });
}

const rows: string[] = [];
for (const target of TARGETS) {
  for (const kind of KINDS) {
    // A fresh process per kind: each measure starts from the same resident memory.
    const { child } = target.start();
    const stdout = child.stdout;
    if (stdout === null) throw new Error('no stdout');
    const { port, ca: caCert } = JSON.parse(await new Promise<string>((resolve) => createInterface({ input: stdout }).once('line', resolve))) as { port: number; ca: string };
    stdout.resume();
    await new Promise((r) => setTimeout(r, 2_000));
    const pid = child.pid ?? 0;
    const before = await rssKiB(pid);
    const opened: { socket: Socket; accepted: boolean }[] = [];
    for (let i = 0; i < COUNT; i += 100) {
      opened.push(...(await Promise.all(Array.from({ length: Math.min(100, COUNT - i) }, (_, j) => open(kind, port, caCert, `127.0.1.${((i + j) % PEERS) + 1}`)))));
    }
    // A connection refused at accept is closed by the server a moment later: count what is open once that has settled.
    await new Promise((r) => setTimeout(r, 1_000));
    const accepted = opened.filter((o) => o.accepted && !o.socket.destroyed).length;
    const after = await rssKiB(pid);
    await new Promise((r) => setTimeout(r, HOLD_MS));
    const stillOpen = opened.filter((o) => !o.socket.destroyed && o.socket.readyState === 'open').length;
    const perConnection = accepted > 0 ? (after - before) / accepted : Number.NaN;
    rows.push(`| ${target.name} | ${kind} | ${COUNT} | ${accepted} | +${((after - before) / 1024).toFixed(1)} MiB | ${Number.isNaN(perConnection) ? '-' : perConnection.toFixed(1)} KiB | ${stillOpen} |`);
    console.error(rows.at(-1));
    for (const { socket } of opened) socket.destroy();
    child.kill('SIGKILL');
  }
}
console.log(['| server | kind | opened | accepted | RSS added | per connection | open after 15 s |', '|---|---|---|---|---|---|---|', ...rows].join('\n'));
