/**
 * The dead-letter stream `<stream>:dlq`: the original fields of an event that cannot be
 * applied, kept whole, plus why (dlq_reason, dlq_rule), when (dlq_at), and where it came from
 * (dlq_source_id). Adding there and acknowledging the original happen in one MULTI, so an
 * event is never both lost and acknowledged. The stream is capped (MAXLEN ~, so Redis trims
 * whole nodes cheaply) and the reason is bounded: a 2 MB field must not become a 2 MB reason.
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

export async function deadLetter(redis: Redis, stream: string, group: string, letter: DeadLetter, now: Date, maxLength: number): Promise<string> {
  const flat: string[] = [];
  for (const [k, v] of Object.entries(letter.fields)) if (!(DLQ_FIELDS as readonly string[]).includes(k)) flat.push(k, v);
  flat.push('dlq_reason', boundedReason(letter.reason), 'dlq_rule', letter.rule, 'dlq_at', now.toISOString(), 'dlq_source_id', letter.sourceId, 'dlq_stream', stream);
  const results = await redis.multi().xadd(dlqStream(stream), 'MAXLEN', '~', maxLength, '*', ...flat).xack(stream, group, letter.sourceId).exec();
  const failed = results?.find(([err]) => err !== null);
  if (results === null || failed !== undefined) throw new Error(`dead-lettering ${letter.sourceId} failed: ${String(failed?.[0] ?? 'transaction aborted')}`);
  return String(results[0]?.[1]);
}

/** The original event's fields, without what dead-lettering added. */
export function originalFields(fields: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !(DLQ_FIELDS as readonly string[]).includes(k)));
}
