/**
 * The dead-letter stream (`{<stream>}:dlq`, redis/keys.ts): the original fields of an event that cannot be
 * applied, kept whole, plus why (dlq_reason, dlq_rule), when (dlq_at), and where it came from
 * (dlq_source_id). Adding there and acknowledging the original happen in one script, so an
 * event is never both lost and acknowledged, nor dead-lettered twice. The stream is capped
 * (MAXLEN ~, so Redis trims whole nodes cheaply) and the reason is bounded: a 2 MB field must
 * not become a 2 MB reason.
 */
import type { Redis } from 'ioredis';
import { SETTLE_LUA, type SettlementKeys } from './acknowledge.ts';
import { fieldsToRecord } from './event.ts';
import { boundedReason, outcomeFields, type OutcomeRecord } from './outcome.ts';

export const DLQ_FIELDS = ['dlq_reason', 'dlq_rule', 'dlq_at', 'dlq_source_id', 'dlq_stream'] as const;

export interface DeadLetter {
  sourceId: string;
  fields: Record<string, string>;
  rule: string;
  reason: string;
}

/**
 * Adds the letter, acknowledges the original and records its outcome, in one script, and only
 * if the original is still pending in the group: an entry delivered twice (a takeover whose
 * reply crossed the first acknowledgement) is then dead-lettered once, not twice. Its attempt
 * count (attempt-log.ts) goes either way.
 */
const DEAD_LETTER_ONCE = `${SETTLE_LUA}
redis.call('HDEL', KEYS[3], ARGV[2])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return false end
local letterCount = tonumber(ARGV[5])
local letter, outcome = {}, {}
for i = 6, 5 + letterCount do letter[#letter + 1] = ARGV[i] end
for i = 6 + letterCount, #ARGV do outcome[#outcome + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(letter))
-- The outcome names the letter, so sigma-api can go from one to the other.
outcome[#outcome + 1] = 'dlq_id'
outcome[#outcome + 1] = id
settle(KEYS[1], ARGV[1], ARGV[2], KEYS[3], KEYS[4], ARGV[4], outcome)
return id
`;

/** Where a dead letter goes: the settlement keys of the original, and the dead-letter stream with its cap. */
export interface DeadLetterKeys extends SettlementKeys {
  deadLetters: string;
  deadLetterMaxLength: number;
}

/**
 * The dead letter's id, or undefined when the original was no longer pending (already
 * settled). The outcome record (dead-lettered, with the rule and the reason) is written with it.
 */
export async function deadLetter(redis: Redis, keys: DeadLetterKeys, letter: DeadLetter, now: Date, outcome: Omit<OutcomeRecord, 'outcome' | 'rule' | 'reason' | 'at' | 'dlq_id'>): Promise<string | undefined> {
  const flat: string[] = [];
  for (const [k, v] of Object.entries(letter.fields)) if (!(DLQ_FIELDS as readonly string[]).includes(k)) flat.push(k, v);
  flat.push('dlq_reason', boundedReason(letter.reason), 'dlq_rule', letter.rule, 'dlq_at', now.toISOString(), 'dlq_source_id', letter.sourceId, 'dlq_stream', keys.stream);
  const record = outcomeFields({ ...outcome, outcome: 'dead-lettered', rule: letter.rule, reason: letter.reason, at: now.toISOString() });
  const id = (await redis.eval(DEAD_LETTER_ONCE, 4, keys.stream, keys.deadLetters, keys.attempts, keys.outcomes.key, keys.group, letter.sourceId, String(keys.deadLetterMaxLength), String(keys.outcomes.maxLength), String(flat.length), ...flat, ...record)) as string | null;
  return id ?? undefined;
}

/** The original event's fields, without what dead-lettering added. */
export function originalFields(fields: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !(DLQ_FIELDS as readonly string[]).includes(k)));
}

/** A dead letter: its own id and its fields (the event's, plus the dlq_ ones). */
export type StoredLetter = [id: string, fields: string[]];

/** Letters read per page while looking one up by its event's id. */
const LOOKUP_PAGE = 1_000;

/**
 * The dead letter `id` names: the letter's own id, or the id of the event it was made from
 * (`dlq_source_id`, which is what an outcome record's `source_id` holds). The letter's own id is
 * one XRANGE; a source id is looked for page by page through the stream (it is capped).
 */
export async function findDeadLetter(redis: Redis, deadLetters: string, id: string): Promise<StoredLetter | undefined> {
  const [own] = (await redis.xrange(deadLetters, id, id)) as StoredLetter[];
  if (own !== undefined) return own;
  for (let start = '-'; ; ) {
    const page = (await redis.xrange(deadLetters, start, '+', 'COUNT', LOOKUP_PAGE)) as StoredLetter[];
    const found = page.find(([, fields]) => fieldsToRecord(fields).dlq_source_id === id);
    if (found !== undefined) return found;
    const last = page.at(-1)?.[0];
    if (page.length < LOOKUP_PAGE || last === undefined) return undefined;
    start = `(${last}`;
  }
}
