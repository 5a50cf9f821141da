/**
 * The ceiling for the admission benchmarks: a bare Node https server with the webhook's TLS
 * settings and keep-alive that reads the body, parses it as JSON and answers a fixed
 * "allowed" AdmissionReview for its uid. No framework, no rules, no logging, no metrics.
 * Prints its port as one JSON line.
 */
import { createServer } from 'node:https';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';

const ca = createCertificateAuthority('bare-ca', 30);
const serving = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 });
const server = createServer({ cert: serving.cert, key: serving.key, minVersion: 'TLSv1.2' }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request?: { uid?: string } };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: review.request?.uid ?? '', allowed: true } }));
  });
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  console.log(JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 }));
});
