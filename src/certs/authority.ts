/**
 * A CA and serving certificates made with node-forge. RSA 2048 with SHA-256 (what
 * kubeadm issues), a CA valid for ten years and leaf certificates for one by default, SANs
 * for every DNS name and IP the webhook is reached by. Building a certificate is pure and
 * fast; generating its key is not, so keys come from node:crypto: `generateKeys()` runs in
 * libuv's thread pool and is what a serving process must use (a renewal inside the webhook
 * must not stop admission), the synchronous default is for the CLI and tests.
 */
import forge from 'node-forge';
import { generateKeyPair, generateKeyPairSync, randomBytes, type RSAKeyPairOptions } from 'node:crypto';
import { isIP } from 'node:net';

const { pki, md } = forge;

export interface PemPair {
  cert: string;
  key: string;
}

export interface ServingCertRequest {
  ca: PemPair;
  /** DNS names; the first is also the subject CN. */
  hosts: readonly string[];
  ips?: readonly string[];
  days: number;
  now?: Date;
  /** The leaf's key pair; generated (synchronously) when not given. */
  keys?: RsaKeys;
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** Back-date certificates a little so a node with a slow clock does not reject them. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

function serial(): string {
  // Positive 128-bit serial: first bit cleared so DER never reads it as negative.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

export type RsaKeys = forge.pki.rsa.KeyPair;

/** RSA 2048, PKCS#1 PEM: what node-forge reads back. */
const RSA_KEY_OPTIONS: RSAKeyPairOptions<'pem', 'pem'> = {
  modulusLength: 2048,
  publicExponent: 0x10001,
  publicKeyEncoding: { type: 'pkcs1', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
};

function fromPem({ privateKey }: { privateKey: string }): RsaKeys {
  const key = pki.privateKeyFromPem(privateKey);
  return { privateKey: key, publicKey: pki.setRsaPublicKey(key.n, key.e) };
}

/** An RSA 2048 key pair generated off the event loop. */
export function generateKeys(): Promise<RsaKeys> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', RSA_KEY_OPTIONS, (error, _publicKey, privateKey) => {
      if (error !== null) reject(error);
      else resolve(fromPem({ privateKey }));
    });
  });
}

/** An RSA 2048 key pair, blocking the event loop while it is made (CLI, tests). */
export function generateKeysSync(): RsaKeys {
  return fromPem(generateKeyPairSync('rsa', RSA_KEY_OPTIONS));
}

function validity(cert: forge.pki.Certificate, now: Date, days: number): void {
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS);
}

export function createCertificateAuthority(commonName: string, days: number, now: Date = new Date(), keys: RsaKeys = generateKeysSync()): PemPair {
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, now, days);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, md.sha256.create());
  return { cert: pki.certificateToPem(cert), key: pki.privateKeyToPem(keys.privateKey) };
}

export function createServingCertificate(request: ServingCertRequest): PemPair {
  const { hosts, ips = [], days, now = new Date(), keys = generateKeysSync() } = request;
  const [first] = hosts;
  if (first === undefined) throw new Error('a serving certificate needs at least one host name');
  for (const ip of ips) if (isIP(ip) === 0) throw new Error(`--ip ${JSON.stringify(ip)} is not an IP address`);
  const caCert = pki.certificateFromPem(request.ca.cert);
  const caKey = pki.privateKeyFromPem(request.ca.key);
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, now, days);
  cert.setSubject([{ name: 'commonName', value: first }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    {
      name: 'subjectAltName',
      altNames: [...hosts.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))],
    },
  ]);
  cert.sign(caKey, md.sha256.create());
  return { cert: pki.certificateToPem(cert), key: pki.privateKeyToPem(keys.privateKey) };
}

/** The DNS names a webhook Service is reached by, for `--service NAME --namespace NS`. */
export function serviceHostNames(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}
