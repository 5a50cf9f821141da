/**
 * Hostile clients of the webhook, in a process of their own so their load does not slow the
 * test's own measurements: CONNECTIONS connections, each announcing a body of 4 MiB or 3 MiB
 * (alternately), sending all of it but the last byte as fast as the server reads, holding on
 * until cut off, and reconnecting, for SECONDS, from 16 loopback addresses of their own
 * (127.0.40.1 to .16: attacking pods, each within the webhook's per-peer limit, none of them the
 * API server). Prints one JSON line when done: connections made, and how many were answered at
 * all before being cut off.
 *   node test/harness/hostile-bodies.ts PORT CA_FILE CONNECTIONS SECONDS
 */
import { readFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

const [portText, caFile, connectionsText, secondsText] = process.argv.slice(2);
const port = Number(portText);
const ca = await readFile(caFile ?? '', 'utf8');
const connections = Number(connectionsText);
const until = Date.now() + Number(secondsText) * 1000;
const MiB = 1024 * 1024;
const chunk = Buffer.alloc(64 * 1024, 0x20);
let made = 0;
let answered = 0;

async function once(bytes: number, peer: string): Promise<void> {
  const socket = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port, localAddress: peer }), ca, servername: 'localhost' });
  made++;
  socket.on('error', () => undefined);
  const answer = { received: false };
  socket.on('data', () => { answer.received = true; });
  const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve(); }));
  const connected = await Promise.race([new Promise<boolean>((resolve) => socket.once('secureConnect', () => { resolve(true); })), closed.then(() => false)]);
  if (connected) {
    socket.write(`POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${bytes}\r\n\r\n`);
    for (let sent = 0; sent < bytes - 1 && !socket.destroyed && Date.now() < until; ) {
      const piece = chunk.subarray(0, Math.min(chunk.length, bytes - 1 - sent));
      sent += piece.length;
      if (!socket.write(piece)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closed]);
    }
    // The last byte is held back: the connection stays until the server cuts it off.
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, Math.max(0, until - Date.now())))]);
  }
  socket.destroy();
  await closed;
  if (answer.received) answered++;
}

await Promise.all(
  Array.from({ length: connections }, async (_, i) => {
    while (Date.now() < until) {
      await once(i % 2 === 0 ? 4 * MiB : 3 * MiB, `127.0.40.${(i % 16) + 1}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }),
);
console.log(JSON.stringify({ made, answered }));
