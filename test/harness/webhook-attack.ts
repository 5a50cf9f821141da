/**
 * Every way a pod on the network can try to take the webhook down, at once, in a process of its
 * own (its load must not slow the measuring process's clock), each attack from loopback
 * addresses of its own so the webhook's per-peer limits meet them as they would meet attacking
 * pods. Each worker reconnects a moment after it is cut off, for SECONDS:
 *   - idle-tcp: a TCP connection that sends nothing;
 *   - stalled-handshake: a TLS record header, then nothing;
 *   - header-only-64k / header-only-3m: a request's headers announcing a 64 KiB or 3 MiB body, then nothing;
 *   - slow-body: a 3 MiB body announced and sent 16 KiB every 250 ms;
 *   - flood: valid-looking AdmissionReviews on keep-alive connections, each sent as soon as the
 *     last was answered.
 * Prints one JSON line when done: per attack, connections made, how many got a TLS session,
 * and requests answered (by status).
 *   node test/harness/webhook-attack.ts PORT CA_FILE SECONDS [SCALE]
 * SCALE (1) multiplies the workers of every attack.
 */
import { readFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { admissionRequest, admissionReview, completeEntry } from '../fixtures/entries.ts';

const [portText, caFile, secondsText, scaleText] = process.argv.slice(2);
const port = Number(portText);
const ca = await readFile(caFile ?? '', 'utf8');
const until = Date.now() + Number(secondsText) * 1000;
const scale = Number(scaleText ?? 1);
const KiB = 1024;
const MiB = 1024 * KiB;

type Attack = 'idle-tcp' | 'stalled-handshake' | 'header-only-64k' | 'header-only-3m' | 'slow-body' | 'flood';

/** Each attack: its peers (127.0.<subnet>.1 to .peers) and workers per peer (more than the webhook's 32 where the point is connections). */
const MIX: Record<Attack, { subnet: number; peers: number; perPeer: number }> = {
  'idle-tcp': { subnet: 20, peers: 12, perPeer: 40 },
  'stalled-handshake': { subnet: 21, peers: 12, perPeer: 40 },
  'header-only-64k': { subnet: 22, peers: 6, perPeer: 40 },
  'header-only-3m': { subnet: 23, peers: 6, perPeer: 40 },
  'slow-body': { subnet: 24, peers: 6, perPeer: 20 },
  flood: { subnet: 25, peers: 4, perPeer: 8 },
};

const stats = Object.fromEntries(Object.keys(MIX).map((attack) => [attack, { made: 0, sessions: 0, answered: {} }])) as Record<Attack, { made: number; sessions: number; answered: Record<string, number> }>;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const closedOf = (socket: Socket): Promise<void> => new Promise((resolve) => { if (socket.destroyed) resolve(); else socket.once('close', () => { resolve(); }); });
const untilEnd = (): Promise<void> => sleep(Math.max(0, until - Date.now()));

function countAnswer(attack: Attack, head: string): void {
  const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 'other';
  stats[attack].answered[status] = (stats[attack].answered[status] ?? 0) + 1;
}

/** A TLS session from `peer`, or undefined when the webhook closed the connection first. */
async function session(attack: Attack, peer: string): Promise<TLSSocket | undefined> {
  stats[attack].made++;
  const socket = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port, localAddress: peer }), ca, servername: 'localhost' });
  socket.on('error', () => undefined);
  const ok = await Promise.race([new Promise<boolean>((resolve) => socket.once('secureConnect', () => { resolve(true); })), closedOf(socket).then(() => false)]);
  if (!ok) return undefined;
  stats[attack].sessions++;
  return socket;
}

/** Whatever the webhook answers on `socket` until it closes it, counted. */
function answersOn(attack: Attack, socket: Socket): void {
  let text = '';
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    for (let end = text.indexOf('\r\n\r\n'); end !== -1; end = text.indexOf('\r\n\r\n')) {
      countAnswer(attack, text);
      // Skip the body by its Content-Length, so pipelined answers are each counted.
      const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      text = text.slice(end + 4 + length);
    }
  });
}

async function once(attack: Attack, peer: string): Promise<void> {
  if (attack === 'idle-tcp' || attack === 'stalled-handshake') {
    stats[attack].made++;
    const socket = netConnect({ host: '127.0.0.1', port, localAddress: peer });
    socket.on('error', () => undefined);
    socket.once('connect', () => {
      if (attack === 'stalled-handshake') socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
    });
    await Promise.race([closedOf(socket), untilEnd()]);
    socket.destroy();
    return;
  }
  const socket = await session(attack, peer);
  if (socket === undefined) return;
  answersOn(attack, socket);
  if (attack === 'header-only-64k' || attack === 'header-only-3m') {
    socket.write(`POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${attack === 'header-only-64k' ? 64 * KiB : 3 * MiB}\r\n\r\n`);
  } else if (attack === 'slow-body') {
    socket.write(`POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${3 * MiB}\r\n\r\n`);
    const piece = Buffer.alloc(16 * KiB, 0x20);
    for (let sent = 0; sent + piece.length < 3 * MiB && !socket.destroyed && Date.now() < until; sent += piece.length) {
      socket.write(piece);
      await sleep(250);
    }
  } else {
    // flood: the next review as soon as the last is answered, on the same connection.
    const body = JSON.stringify(admissionReview(admissionRequest('CREATE', completeEntry())));
    const request = `POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    socket.on('data', () => { if (!socket.destroyed && Date.now() < until) socket.write(request); });
    socket.write(request);
  }
  await Promise.race([closedOf(socket), untilEnd()]);
  socket.destroy();
}

await Promise.all(
  (Object.entries(MIX) as [Attack, (typeof MIX)[Attack]][]).flatMap(([attack, { subnet, peers, perPeer }]) =>
    Array.from({ length: peers * perPeer * scale }, async (_, i) => {
      const peer = `127.0.${subnet}.${(i % peers) + 1}`;
      while (Date.now() < until) {
        await once(attack, peer);
        // A moment before reconnecting: a refused worker does not spin.
        await sleep(250);
      }
    }),
  ),
);
console.log(JSON.stringify(stats));
