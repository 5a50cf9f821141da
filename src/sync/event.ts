/**
 * The event contract between sigma-api and edge-registrar: flat field/value pairs on a
 * Redis stream. One zod schema is the source of truth for parsing and for the JSON Schema
 * published in docs/ (`npm run schema`). A bad event is never thrown at the caller: it
 * comes back as a rejection naming the field, the value and the rule, for the dead-letter
 * stream.
 */
import { z } from 'zod';
import { renderValue } from '../policy/describe.ts';
import { formatPath } from '../util/zod-format.ts';

const vpsId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, 'must be 1-128 characters of letters, digits, ".", "_", ":" or "-", starting with a letter or digit')
  .describe("sigma-api's id for the VPS; the key of edge-registrar's state");

const entryName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'must be a Kubernetes object name (lower-case DNS subdomain)')
  .describe('the WorkloadEntry name, e.g. vps-jp-01');

const extraLabels = z
  .string()
  .transform((text, ctx) => {
    try {
      const value: unknown = JSON.parse(text);
      if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string')) {
        return value as Record<string, string>;
      }
    } catch {
      // reported below
    }
    ctx.addIssue({ code: 'custom', message: 'must be a JSON object of string values, e.g. {"provider":"vultr"}' });
    return z.NEVER;
  })
  .describe('a JSON object of extra labels (string values)');

const occurredAt = z.iso.datetime({ offset: true }).describe('when sigma-api saw it happen (RFC 3339)');

export const registerEventSchema = z
  .object({
    event: z.literal('register'),
    vps_id: vpsId,
    name: entryName,
    address: z.string().min(1).describe("the VPS's public IP address"),
    country: z.string().min(1).describe('ISO 3166-1 alpha-2 code, lower case'),
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
  rule: string;
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

export function parseEvent(fields: Record<string, string>): ParsedEvent {
  const type = fields.event;
  const schema = type === 'register' ? registerEventSchema : type === 'retire' ? retireEventSchema : undefined;
  if (schema === undefined) {
    return {
      ok: false,
      rejection: {
        rule: 'event.type',
        field: 'event',
        value: type,
        reason: type === undefined ? 'event is missing; expected "register" or "retire"' : `event ${renderValue(type)} is not known; expected "register" or "retire"`,
      },
    };
  }
  // Unknown fields are ignored so sigma-api can add fields before edge-registrar reads them.
  const result = schema.safeParse(fields);
  if (result.success) return { ok: true, event: result.data };
  const issue = result.error.issues[0];
  const field = issue ? formatPath(issue.path) : '(event)';
  const value = issue?.path[0] !== undefined ? fields[String(issue.path[0])] : undefined;
  const reasons = result.error.issues.map((i) => {
    const f = formatPath(i.path);
    const v = i.path[0] !== undefined ? fields[String(i.path[0])] : undefined;
    return `${f}: ${v === undefined ? 'missing' : renderValue(v)} ${i.message}`;
  });
  return { ok: false, rejection: { rule: 'event.schema', field, value, reason: reasons.join('; ') } };
}

/** JSON Schema of the events, for producers in other languages (docs/vps-event.schema.json). */
export function eventJsonSchema(): unknown {
  const schema = z.toJSONSchema(z.discriminatedUnion('event', [registerEventSchema, retireEventSchema]), { io: 'input' });
  return { $id: 'urn:edge-registrar:vps-event', title: 'sigma-api VPS event (Redis stream entry fields)', ...schema };
}
