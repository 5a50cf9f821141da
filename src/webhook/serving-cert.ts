/**
 * The webhook's serving certificate, loaded from files and swapped into the running HTTPS
 * server with setSecureContext when the files change: new handshakes get the new
 * certificate, established connections are left alone (nothing is dropped). A pair that
 * does not match, or does not parse, is refused and the old one stays in use.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import { readAll, watchFiles } from '../util/file-watch.ts';

export interface LoadedCertificate {
  cert: Buffer;
  key: Buffer;
  notAfter: Date;
  fingerprint: string;
}

export function parseCertificatePair(cert: Buffer, key: Buffer, source: string): LoadedCertificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (error) {
    throw new Error(`${source}: certificate does not parse: ${(error as Error).message}`, { cause: error });
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new Error(`${source}: private key does not parse: ${(error as Error).message}`, { cause: error });
  }
  if (!x509.checkPrivateKey(privateKey)) throw new Error(`${source}: private key does not match the certificate`);
  return { cert, key, notAfter: new Date(x509.validTo), fingerprint: x509.fingerprint256 };
}

export async function loadCertificate(certFile: string, keyFile: string): Promise<LoadedCertificate> {
  const [cert, key] = (await readAll([certFile, keyFile])) as [Buffer, Buffer];
  return parseCertificatePair(cert, key, `${certFile} + ${keyFile}`);
}

export const TLS_OPTIONS: SecureContextOptions = { minVersion: 'TLSv1.2' };

export function watchCertificate(
  certFile: string,
  keyFile: string,
  initial: LoadedCertificate,
  options: { intervalMs: number; onLoad: (c: LoadedCertificate) => void; onError: (e: unknown) => void },
): () => void {
  return watchFiles([certFile, keyFile], [initial.cert, initial.key], {
    intervalMs: options.intervalMs,
    onChange: ([cert, key]) => {
      try {
        // A Secret update writes both files, but not atomically as a pair from our point of
        // view; a mismatched pair is reported and retried on the next change.
        options.onLoad(parseCertificatePair(cert ?? Buffer.alloc(0), key ?? Buffer.alloc(0), `${certFile} + ${keyFile}`));
      } catch (error) {
        options.onError(error);
      }
    },
    onError: options.onError,
  });
}
