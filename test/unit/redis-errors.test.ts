/** Which Redis failures are "away for now" (retried for as long as they last) and which are the command's fault. */
import { describe, expect, it } from 'vitest';
import { isRedisUnavailable } from '../../src/redis/errors.ts';
import { eventTypeLabel } from '../../src/observability/metrics.ts';

const named = (name: string, message: string): Error => Object.assign(new Error(message), { name });
const coded = (code: string): Error => Object.assign(new Error(`connect ${code} 127.0.0.1:6379`), { code });

describe('isRedisUnavailable', () => {
  it.each<[string, unknown, boolean]>([
    // A command that timed out on a connection still up used to count as unexpected: ten
    // scattered ones dead-lettered a valid event as event.retries-exhausted.
    ['a command timeout', new Error('Command timed out'), true],
    ['a closed connection', new Error('Connection is closed.'), true],
    ['no offline queue while reconnecting', new Error("Stream isn't writeable and enableOfflineQueue options is false"), true],
    ["ioredis's retry limit", named('MaxRetriesPerRequestError', 'Reached the max retries per request limit (which is 3). Refer to "maxRetriesPerRequest" option for details.'), true],
    ['a command aborted by a closing connection', named('AbortError', 'Command aborted due to connection close'), true],
    ['a refused connection', coded('ECONNREFUSED'), true],
    ['a reset connection', coded('ECONNRESET'), true],
    ['a replica being promoted', named('ReplyError', 'READONLY You can\'t write against a read only replica.'), true],
    ['a Redis still loading its data', named('ReplyError', 'LOADING Redis is loading the dataset in memory'), true],
    ['a cluster slot moving', named('ReplyError', 'MOVED 3999 127.0.0.1:6381'), true],
    ['a script error', named('ReplyError', 'ERR Error running script (call to f_x): @user_script:1: WRONGTYPE'), false],
    ['a wrong type', named('ReplyError', 'WRONGTYPE Operation against a key holding the wrong kind of value'), false],
    ['a bug', new TypeError("Cannot read properties of undefined (reading 'x')"), false],
    ['not an error', 'Command timed out', false],
  ])('%s: %s', (_name, error, expected) => {
    expect(isRedisUnavailable(error)).toBe(expected);
  });
});

describe('the event label of the events counter', () => {
  it.each<[string | undefined, string]>([
    ['register', 'register'],
    ['retire', 'retire'],
    [undefined, 'unknown'],
    // Garbage event types would each be a series that lives for good.
    ['reboot', 'other'],
    ['x'.repeat(1000), 'other'],
  ])('%j → %s', (event, label) => {
    expect(eventTypeLabel(event)).toBe(label);
  });
});
