/**
 * Settling an event: its XACK, its outcome record (outcome.ts) and the removal of its attempt
 * count (attempt-log.ts), in one script, and the outcome only when that XACK acknowledged it.
 * An event delivered twice is then settled once: the second XACK acknowledges nothing and
 * records nothing. This module settles events that change no state (superseded, trimmed);
 * the state commit (state-store.ts) and the dead letter (dead-letter.ts) settle with the same
 * Lua function inside their own scripts.
 */
import type { Redis } from 'ioredis';
import { outcomeFields, type OutcomeRecord, type OutcomeStream } from './outcome.ts';

export interface SettlementKeys {
  stream: string;
  group: string;
  /** The attempt-count hash (AttemptLog.key). */
  attempts: string;
  outcomes: OutcomeStream;
}

/**
 * The Lua function every settling script includes. `fields` is the outcome record's flat
 * field list. Returns whether the event was pending (and is now settled here).
 */
export const SETTLE_LUA = `
local function settle(stream, group, id, attempts, outcomes, maxlen, fields)
  redis.call('HDEL', attempts, id)
  if redis.call('XACK', stream, group, id) == 1 then
    redis.call('XADD', outcomes, 'MAXLEN', '~', maxlen, '*', unpack(fields))
    return true
  end
  return false
end
`;

const SETTLE = `${SETTLE_LUA}
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
return settle(KEYS[1], ARGV[1], ARGV[2], KEYS[2], KEYS[3], ARGV[3], fields) and 1 or 0
`;

/** Acknowledges an event that changes no state, with its outcome; false when another delivery settled it first. */
export async function settleWithoutChange(redis: Redis, keys: SettlementKeys, record: OutcomeRecord): Promise<boolean> {
  const settled = (await redis.eval(SETTLE, 3, keys.stream, keys.attempts, keys.outcomes.key, keys.group, record.source_id, String(keys.outcomes.maxLength), ...outcomeFields(record))) as number;
  return settled === 1;
}
