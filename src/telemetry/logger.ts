/**
 * pino JSON logs. Errors go through pino's serializer (message, stack, cause, and a
 * client-node ApiException's code and body), never JSON.stringify, which prints `{}`.
 * Secrets are censored by path, and URL credentials are cut from error messages.
 */
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import { LOG_REDACT_PATHS, REDACTED, redactUrlCredentials } from '../util/redact.ts';

export type { Logger };

function serializeError(error: Error): ReturnType<typeof pino.stdSerializers.errWithCause> {
  const serialized = pino.stdSerializers.errWithCause(error);
  serialized.message = redactUrlCredentials(serialized.message);
  if (typeof serialized.stack === 'string') serialized.stack = redactUrlCredentials(serialized.stack);
  return serialized;
}

export function createLogger(level: LevelWithSilent, component: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'edge-registrar', component },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    serializers: { err: serializeError },
    redact: { paths: LOG_REDACT_PATHS, censor: REDACTED },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
