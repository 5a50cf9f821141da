/**
 * How long a self-managed certificate renewal blocks the webhook's event loop (admission
 * requests wait that long): the keys as node-forge generated them before (synchronously, in
 * the request-serving thread) beside node:crypto's generateKeyPair in the thread pool, with
 * node-forge building the certificates either way. Measured as the longest gap a 1 ms
 * interval sees while a renewal (new CA and serving certificate) runs. Prints a table.
 */
import forge from 'node-forge';
import { renew, renewalKeys, type CertificateWants } from '../src/certs/renewal.ts';
import { percentile, printTable } from './stats.ts';

const wants: CertificateWants = { hosts: ['edge-registrar-webhook', 'edge-registrar-webhook.edge-registrar', 'edge-registrar-webhook.edge-registrar.svc'], days: 365, caDays: 3650, renewBeforeDays: 30, caCommonName: 'edge-registrar CA' };
const RUNS = Number(process.env.CERT_BENCH_RUNS ?? 20);

/** The longest event-loop stall while `work` runs, in ms. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  await new Promise((r) => setTimeout(r, 5));
  last = performance.now();
  await work();
  const now = performance.now();
  longest = Math.max(longest, now - last);
  clearInterval(timer);
  return longest;
}

const forgeKeys = (): forge.pki.rsa.KeyPair => forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });

const before: number[] = [];
const after: number[] = [];
for (let i = 0; i < RUNS; i++) {
  before.push(await longestStall(() => Promise.resolve(renew(undefined, { action: 'new-ca', reason: 'bench' }, wants, new Date(), { ca: forgeKeys(), leaf: forgeKeys() }))));
  after.push(await longestStall(async () => renew(undefined, { action: 'new-ca', reason: 'bench' }, wants, new Date(), await renewalKeys(undefined, { action: 'new-ca', reason: 'bench' }))));
}
const row = (name: string, xs: number[]): string[] => {
  const sorted = [...xs].sort((a, b) => a - b);
  return [name, `${percentile(sorted, 50).toFixed(1)} ms`, `${percentile(sorted, 100).toFixed(1)} ms`];
};
console.log(`\nCertificate renewal: longest event-loop stall (${RUNS} renewals each, new CA + serving certificate)\n`);
printTable(['keys', 'p50 stall', 'max stall'], [row('node-forge, synchronous (before)', before), row('node:crypto generateKeyPair, thread pool (now)', after)]);
