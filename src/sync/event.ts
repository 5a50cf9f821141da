/**
 * The event contract between sigma-api and edge-registrar: flat field/value pairs on a
 * Redis stream. One zod schema is the source of truth for parsing and for the JSON Schema
 * published in docs/ (`npm run schema`). A bad event is never thrown at the caller: it
 * comes back as a rejection naming the field, the value and the rule, for the dead-letter
 * stream.
 */
import { z } from 'zod';
import { describeViolation } from '../policy/describe.ts';
import { formatPath } from '../util/zod-format.ts';

/**
 * What each field must be, in the words a dead letter and `publish` use (the webhook's own
 * form: the field, the value, what is wrong with it, what is expected). The zod checks below
 * carry the "what is wrong" part as their message; `expected` is added once per field.
 */
export const EVENT_FIELDS = {
  event: { expected: '"register" or "retire"' },
  vps_id: { expected: '1 to 128 characters of letters, digits, ".", "_", ":" or "-", the first a letter or digit, e.g. 1001' },
  name: { expected: 'a Kubernetes object name: at most 253 characters of lower-case letters, digits, "-" and ".", starting and ending with a letter or digit, e.g. vps-jp-01' },
  address: { expected: "the VPS's public IP address, e.g. 103.21.244.10" },
  country: { expected: 'an ISO 3166-1 alpha-2 code in lower case, e.g. jp' },
  labels: { expected: 'a JSON object of string values, e.g. {"provider":"vultr"}' },
  occurred_at: { expected: 'an RFC 3339 time with its offset, e.g. 2026-11-21T05:00:00Z' },
} as const;

type EventField = keyof typeof EVENT_FIELDS;

const nonEmpty = (description: string) => z.string({ error: (issue) => (issue.input === undefined ? 'is missing' : 'is not a string') }).min(1, { error: 'is empty' }).describe(description);

const vpsId = nonEmpty("sigma-api's id for the VPS; the key of edge-registrar's state")
  .max(128, { error: (issue) => `is ${String((issue.input as string).length)} characters long, more than 128` })
  .regex(/^[A-Za-z0-9]/, { error: 'does not start with a letter or digit' })
  .regex(/^[A-Za-z0-9._:-]*$/, { error: 'has a character other than letters, digits, ".", "_", ":" and "-"' });

const entryName = nonEmpty('the WorkloadEntry name, e.g. vps-jp-01')
  .max(253, { error: (issue) => `is ${String((issue.input as string).length)} characters long, more than 253` })
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, { error: 'is not a Kubernetes object name (lower-case DNS subdomain)' });

const extraLabels = nonEmpty('a JSON object of extra labels (string values)').transform((text, ctx) => {
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string')) {
      return value as Record<string, string>;
    }
    ctx.addIssue({ code: 'custom', message: 'is not a JSON object of string values' });
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not JSON' });
  }
  return z.NEVER;
});

const occurredAt = z.iso.datetime({ offset: true, error: (issue) => (issue.input === undefined ? 'is missing' : 'is not an RFC 3339 time with an offset') }).describe('when sigma-api saw it happen (RFC 3339)');

export const registerEventSchema = z
  .object({
    event: z.literal('register'),
    vps_id: vpsId,
    name: entryName,
    address: nonEmpty("the VPS's public IP address"),
    country: nonEmpty('ISO 3166-1 alpha-2 code, lower case'),
    labels: extraLabels.optional(),
    occurred_at: occurredAt.optional(),
  })
  .describe('A VPS registered (or re-registered, possibly with a new address)');

export const retireEventSchema = z
  .object({
    event: z.literal('retire'),
    vps_id: vpsId,
    name: entryName.optional(),
    occurred_at: occurredAt.optional(),
  })
  .describe('A VPS retired; its WorkloadEntry is removed');

export type RegisterEvent = z.output<typeof registerEventSchema>;
export type RetireEvent = z.output<typeof retireEventSchema>;
export type VpsEvent = RegisterEvent | RetireEvent;

export interface EventRejection {
  rule: 'event.type' | 'event.schema';
  field: string;
  value: string | undefined;
  reason: string;
}

export type ParsedEvent = { ok: true; event: VpsEvent } | { ok: false; rejection: EventRejection };

/** Stream entries are flat [field, value, field, value, ...]; a repeated field keeps its last value. */
export function fieldsToRecord(fields: readonly string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string;
  return record;
}

/** One broken field in the words every other refusal uses (policy/describe.ts). */
function fieldProblem(rule: 'event.type' | 'event.schema', field: string, value: string | undefined, problem: string): string {
  const expected = field in EVENT_FIELDS ? EVENT_FIELDS[field as EventField].expected : 'a field of the event contract';
  return describeViolation({ rule, path: field, value, problem, expected });
}

export function parseEvent(fields: Record<string, string>): ParsedEvent {
  const type = fields.event;
  const schema = type === 'register' ? registerEventSchema : type === 'retire' ? retireEventSchema : undefined;
  if (schema === undefined) {
    return { ok: false, rejection: { rule: 'event.type', field: 'event', value: type, reason: fieldProblem('event.type', 'event', type, type === undefined ? 'is missing' : 'is not a known event type') } };
  }
  // Unknown fields are ignored so sigma-api can add fields before edge-registrar reads them.
  const result = schema.safeParse(fields);
  if (result.success) return { ok: true, event: result.data };
  const issue = result.error.issues[0];
  const field = issue ? formatPath(issue.path) : '(event)';
  const value = issue?.path[0] !== undefined ? fields[String(issue.path[0])] : undefined;
  const reasons = result.error.issues.map((i) => {
    const name = i.path[0] !== undefined ? String(i.path[0]) : '(event)';
    return fieldProblem('event.schema', formatPath(i.path), fields[name], i.message);
  });
  return { ok: false, rejection: { rule: 'event.schema', field, value, reason: reasons.join('; ') } };
}

/** JSON Schema of the events, for producers in other languages (docs/vps-event.schema.json). */
export function eventJsonSchema(): unknown {
  const schema = z.toJSONSchema(z.discriminatedUnion('event', [registerEventSchema, retireEventSchema]), { io: 'input' });
  return { $id: 'urn:edge-registrar:vps-event', title: 'sigma-api VPS event (Redis stream entry fields)', ...schema };
}
