/**
 * What became of each event, for sigma-api: one record per acknowledged event on the outcome
 * stream (`{<stream>}:outcomes` by default), written by the same script that acknowledges the
 * event and only when that XACK acknowledged it, so an acknowledged event has exactly one
 * outcome, never none and never two, across crashes, redeliveries and replays. The stream is
 * capped with an approximate MAXLEN. One zod schema is the contract: it types the records
 * written and gives the JSON Schema published in docs/ (`npm run schema`).
 */
import { z } from 'zod';

/** The longest reason stored (in an outcome or a dead letter); the fields it talks about are stored whole beside it in a dead letter. */
export const MAX_REASON_CHARS = 1_024;

export function boundedReason(reason: string): string {
  return reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS - 1)}…` : reason;
}

export const OUTCOMES = ['applied', 'deleted', 'unchanged', 'superseded', 'dead-lettered', 'trimmed'] as const;
export type OutcomeKind = (typeof OUTCOMES)[number];

/** How long an echoed field may be in a record (an event's fields are sigma-api's, unbounded). */
const FIELD_CHARS = 256;

export const outcomeRecordSchema = z
  .object({
    source_id: z.string().regex(/^\d+-\d+$/).describe('the id of the event on the stream'),
    vps_id: z.string().max(FIELD_CHARS).optional().describe("the event's vps_id, as sent (absent when it had none)"),
    event: z.string().max(FIELD_CHARS).optional().describe("the event's type, as sent (register, retire, or what the producer wrote)"),
    outcome: z.enum(OUTCOMES).describe(
      [
        'applied: the register is in the cluster;',
        'deleted: the retire removed the entry;',
        'unchanged: the retire found no entry of this VPS to remove;',
        "superseded: older than the VPS's state (a newer event was applied first), acknowledged without effect;",
        'dead-lettered: moved to the dead-letter stream, see rule and reason;',
        'trimmed: the entry was trimmed from the stream before it was applied',
      ].join(' '),
    ),
    name: z.string().max(FIELD_CHARS).optional().describe("the WorkloadEntry's name"),
    rule: z.string().max(FIELD_CHARS).optional().describe('for dead-lettered: the rule the event broke (as in the dead-letter stream)'),
    reason: z.string().max(1024).optional().describe('why, in words (at most 1,024 characters)'),
    dlq_id: z.string().regex(/^\d+-\d+$/).optional().describe("for dead-lettered: the dead letter's own id on the dead-letter stream (what `edge-registrar dlq show` and `dlq replay` take; they take source_id too)"),
    at: z.iso.datetime().describe('when the daemon settled it (RFC 3339, UTC)'),
  })
  .describe("An event's outcome (a Redis stream entry of the outcome stream)");

export type OutcomeRecord = z.output<typeof outcomeRecordSchema>;

export function outcomeJsonSchema(): unknown {
  const schema = z.toJSONSchema(outcomeRecordSchema, { io: 'input' });
  return { $id: 'urn:edge-registrar:vps-event-outcome', title: "edge-registrar's outcome of a VPS event (Redis stream entry fields)", ...schema };
}

const cut = (value: string | undefined): string | undefined => (value === undefined ? undefined : value.length > FIELD_CHARS ? `${value.slice(0, FIELD_CHARS - 1)}…` : value);

/** A record's fields as a flat XADD list, the echoed values bounded. */
export function outcomeFields(record: OutcomeRecord): string[] {
  const fields: [string, string | undefined][] = [
    ['source_id', record.source_id],
    ['vps_id', cut(record.vps_id)],
    ['event', cut(record.event)],
    ['outcome', record.outcome],
    ['name', cut(record.name)],
    ['rule', cut(record.rule)],
    ['reason', record.reason === undefined ? undefined : boundedReason(record.reason)],
    ['dlq_id', record.dlq_id],
    ['at', record.at],
  ];
  return fields.flatMap(([k, v]) => (v === undefined ? [] : [k, v]));
}

/** Where outcomes go and how many are kept (about: XADD MAXLEN ~). */
export interface OutcomeStream {
  key: string;
  maxLength: number;
}
