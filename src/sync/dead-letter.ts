/**
 * The dead-letter stream `<stream>:dlq`: the original fields of an event that cannot be
 * applied, kept whole, plus why (dlq_reason, dlq_rule), when (dlq_at), and where it came from
 * (dlq_source_id). Adding there and acknowledging the original happen in one script, so an
 * event is never both lost and acknowledged, nor dead-lettered twice. The stream is capped
 * (MAXLEN ~, so Redis trims whole nodes cheaply) and the reason is bounded: a 2 MB field must
 * not become a 2 MB reason.
 */
import type { Redis } from 'ioredis';

export const DLQ_FIELDS = ['dlq_reason', 'dlq_rule', 'dlq_at', 'dlq_source_id', 'dlq_stream'] as const;

/** The longest reason stored; the fields it talks about are stored whole beside it. */
export const MAX_REASON_CHARS = 1_024;

export function boundedReason(reason: string): string {
  return reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS - 1)}…` : reason;
}

export interface DeadLetter {
  sourceId: string;
  fields: Record<string, string>;
  rule: string;
  reason: string;
}

export function dlqStream(stream: string): string {
  return `${stream}:dlq`;
}

/**
 * Adds the letter and acknowledges the original in one script, and only if the original is
 * still pending in the group: an entry delivered twice (a takeover or an idle claim whose
 * reply crossed the first acknowledgement) is then dead-lettered once, not twice.
 */
const DEAD_LETTER_ONCE = `
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
`;

/** The dead letter's id, or undefined when the original was no longer pending (already settled). */
export async function deadLetter(redis: Redis, stream: string, group: string, letter: DeadLetter, now: Date, maxLength: number): Promise<string | undefined> {
  const flat: string[] = [];
  for (const [k, v] of Object.entries(letter.fields)) if (!(DLQ_FIELDS as readonly string[]).includes(k)) flat.push(k, v);
  flat.push('dlq_reason', boundedReason(letter.reason), 'dlq_rule', letter.rule, 'dlq_at', now.toISOString(), 'dlq_source_id', letter.sourceId, 'dlq_stream', stream);
  const id = (await redis.eval(DEAD_LETTER_ONCE, 2, stream, dlqStream(stream), group, letter.sourceId, String(maxLength), ...flat)) as string | null;
  return id ?? undefined;
}

/** The original event's fields, without what dead-lettering added. */
export function originalFields(fields: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !(DLQ_FIELDS as readonly string[]).includes(k)));
}
