/**
 * Whatever a caller logs under `err` is logged and never thrown on: a serializer that throws
 * turns a log call inside a catch block into a crash. The sync daemon exited 1 this way in a
 * soak (seed 415701734): its Event recorder logged an error's message string under `err` while
 * the API server restarted.
 */
import { expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';

function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('info', 'test', { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>); } });
  return { logger, lines };
}

it.each<[string, unknown, unknown]>([
  ['a message string', 'connect redis://sync:hunter2@10.0.0.1:6379 refused', 'connect redis://sync:[redacted]@10.0.0.1:6379 refused'],
  ['a plain object without a message', { code: 'ECONNRESET' }, { code: 'ECONNRESET' }],
  ['an object whose message is not a string', { message: 42 }, { message: 42 }],
  ['undefined', undefined, undefined],
  ['a number', 7, 7],
  ['null', null, null],
])('err as %s is logged as it is (URL credentials cut), not thrown on', (_name, err, expected) => {
  const { logger, lines } = capturingLogger();
  expect(() => { logger.warn({ err }, 'something failed'); }).not.toThrow();
  expect(lines).toHaveLength(1);
  expect(lines[0]?.err).toEqual(expected);
  expect(lines[0]?.msg).toBe('something failed');
});

it('an Error keeps its message, stack and cause, with URL credentials cut from each', () => {
  const { logger, lines } = capturingLogger();
  logger.warn({ err: new Error('dial redis://sync:hunter2@h:6379', { cause: new Error('ECONNREFUSED') }) }, 'failed');
  const err = lines[0]?.err as { message: string; stack: string; type: string };
  expect(err.type).toBe('Error');
  expect(err.message).toBe('dial redis://sync:[redacted]@h:6379');
  expect(err.stack).toContain('redis://sync:[redacted]@h:6379');
  expect(JSON.stringify(lines[0])).not.toContain('hunter2');
});
