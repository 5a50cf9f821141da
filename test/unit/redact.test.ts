/** Secrets never reach an error message or a log line (they land in pod logs). */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/flags.ts';
import { syncConfig } from '../../src/config/sync.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { redactSecrets, redactUrlCredentials } from '../../src/util/redact.ts';

function configError(env: Record<string, string>, flags: Record<string, string> = {}): string {
  try {
    syncConfig({ consumer: 'c', ...flags }, env, 'c');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration errors', () => {
  it('an invalid Redis URL with REDIS_PASSWORD set names the URL and the rule, never the password', () => {
    const message = configError({ REDIS_URL: 'http://cache:6379', REDIS_PASSWORD: 'hunter2-s3cret' });
    expect(message).toContain('must start with redis:// or rediss://');
    expect(message).toContain('http://cache:6379');
    expect(message).not.toContain('hunter2-s3cret');
    expect(message).toContain('[redacted]');
  });

  it('credentials inside the URL are cut, the rest of it is shown', () => {
    const message = configError({ REDIS_URL: 'http://default:p4ss-w0rd@cache:6379/0', REDIS_SENTINEL_PASSWORD: 'sentinel-pw' });
    expect(message).not.toContain('p4ss-w0rd');
    expect(message).not.toContain('sentinel-pw');
    expect(message).toContain('http://default:[redacted]@cache:6379/0');
  });
});

describe('redaction helpers', () => {
  it.each([
    ['redis://user:pw@host:6379', 'redis://user:[redacted]@host:6379'],
    ['rediss://:only-password@host', 'rediss://:[redacted]@host'],
    ['connect to redis://host:6379 failed', 'connect to redis://host:6379 failed'],
    ['https://ops:t0ken@fleet.example/list.json and http://a:b@c', 'https://ops:[redacted]@fleet.example/list.json and http://a:[redacted]@c'],
  ])('%s', (input, expected) => {
    expect(redactUrlCredentials(input)).toBe(expected);
  });

  it('replaces secret settings at any depth', () => {
    expect(redactSecrets({ redis: { url: 'redis://h', password: 'x', sentinelPassword: 'y', nested: [{ token: 'z' }] } })).toEqual({
      redis: { url: 'redis://h', password: '[redacted]', sentinelPassword: '[redacted]', nested: [{ token: '[redacted]' }] },
    });
  });
});

describe('log lines', () => {
  it('pino censors password fields and URL credentials in logged errors', () => {
    const lines: string[] = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
    const logger = createLogger('info', 'test', sink);
    logger.info({ redis: { url: 'redis://h:6379', password: 'plain-pw' } }, 'settings');
    logger.warn({ err: new Error('connect ECONNREFUSED redis://svc:pw-in-url@redis:6379') }, 'redis connection error');
    const text = lines.join('');
    expect(text).not.toContain('plain-pw');
    expect(text).not.toContain('pw-in-url');
    expect(text).toContain('"password":"[redacted]"');
    expect(text).toContain('redis://svc:[redacted]@redis:6379');
  });
});
