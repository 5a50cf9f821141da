/**
 * pino JSON logs. Errors go through pino's serializer (message, stack, cause, and a
 * client-node ApiException's code and body), never JSON.stringify, which prints `{}`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export function createLogger(level: LevelWithSilent, component: string): Logger {
  return pino({
    level,
    base: { service: 'edge-registrar', component },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.errWithCause },
  });
}
