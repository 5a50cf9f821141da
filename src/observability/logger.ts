/**
 * pino JSON logs. Errors go through pino's serializer (message, stack, cause, and a
 * client-node ApiException's code and body), never JSON.stringify, which prints `{}`.
 * Secrets are censored by path, and URL credentials are cut from error messages.
 *
 * Logs go to stdout asynchronously, and pino's writer keeps whatever stdout has not taken
 * yet in memory, without limit by default: a process that logs faster than its stdout is
 * drained (a slow container runtime, a full disk, a busy log collector) grows until the
 * kernel kills it. The bench:memory run found exactly that (the sync daemon OOM-killed at its
 * 384 Mi limit during a 10,000-event backfill). So the buffer is bounded: past
 * LOG_BUFFER_BYTES, lines are dropped and counted (edge_registrar_log_lines_dropped_total).
 */
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import { LOG_REDACT_PATHS, REDACTED, redactUrlCredentials } from '../util/redact.ts';

export type { Logger };

/**
 * Total: whatever a caller puts under `err` (an Error, a message string, a plain object from a
 * library, undefined) is logged, never thrown on. A serializer that throws makes the log call
 * throw, inside whatever catch block was reporting a failure.
 */
function serializeError(error: unknown): unknown {
  if (typeof error === 'string') return redactUrlCredentials(error);
  if (typeof error !== 'object' || error === null) return error;
  // errWithCause returns anything without a string message as it is.
  const serialized = pino.stdSerializers.errWithCause(error as Error) as { message?: unknown; stack?: unknown };
  if (typeof serialized.message === 'string') serialized.message = redactUrlCredentials(serialized.message);
  if (typeof serialized.stack === 'string') serialized.stack = redactUrlCredentials(serialized.stack);
  return serialized;
}

/** The most log output held while stdout is slower than the process (about 40,000 lines). */
export const LOG_BUFFER_BYTES = 16 * 1024 * 1024;

let droppedLines = 0;

/** Log lines dropped because stdout did not keep up, since the process started. */
export function droppedLogLines(): number {
  return droppedLines;
}

/** An asynchronous writer to `fd` that holds at most `maxBytes` not yet written, and drops (and counts) the rest. */
export function boundedDestination(fd = 1, maxBytes = LOG_BUFFER_BYTES): DestinationStream {
  const stream = pino.destination({ dest: fd, sync: false, maxLength: maxBytes });
  stream.on('drop', () => { droppedLines++; });
  return stream;
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
  return pino(options, destination ?? boundedDestination());
}
