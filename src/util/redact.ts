/**
 * Secrets never reach a message or a log line: passwords and tokens in settings, and the
 * credentials part of URLs (redis://user:PASSWORD@host). Every error message that echoes a
 * setting, and every log line (see observability/logger.ts), goes through here.
 */
export const REDACTED = '[redacted]';

/** Setting names whose values are secrets, however deep they sit. */
const SECRET_KEY = /pass(word)?|secret|token|credential|private.?key|^auth$/i;

/** `scheme://user:password@host` → `scheme://user:[redacted]@host`, in any text. */
export function redactUrlCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^\s/@:"']*):([^\s/@"']*)@/gi, (_m, scheme: string, user: string) => `${scheme}${user}:${REDACTED}@`);
}

/** A copy of a value with secret settings replaced and URL credentials removed from strings. */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactUrlCredentials(value);
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, SECRET_KEY.test(k) && v !== undefined ? REDACTED : redactSecrets(v, depth + 1)]),
  );
}

/**
 * Paths pino censors in every log line. Exact paths only: fast-redact compiles them into
 * direct accessors, while wildcards (`*.password`) walk every logged object and cost several
 * per cent of the webhook's CPU at saturation. These are the places a secret could be logged:
 * a setting, a Redis configuration, request headers.
 */
export const LOG_REDACT_PATHS = [
  'password',
  'token',
  'authorization',
  'sentinelPassword',
  'redis.password',
  'redis.sentinelPassword',
  'config.redis.password',
  'config.redis.sentinelPassword',
  'headers.authorization',
  'req.headers.authorization',
];

/**
 * A URL to print in a command a user may run: its password dropped (the user name kept), so
 * the command reads it from the environment (REDIS_PASSWORD) instead of a terminal or a log.
 */
export function withoutPassword(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^\s/@:"']*):([^\s/@"']*)@/i, (_m, scheme: string, user: string) => (user === '' ? scheme : `${scheme}${user}@`));
}
