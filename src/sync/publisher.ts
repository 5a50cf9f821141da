/**
 * Producing events: what sigma-api does, for operators (`publish`), for `backfill` and for
 * tests. Events are validated against the contract before they are added, so a producer
 * using these helpers never feeds the dead-letter stream.
 */
import type { Redis } from 'ioredis';
import { registerEventSchema, retireEventSchema, type RegisterEvent, type RetireEvent } from './event.ts';
import { formatZodIssues } from '../util/zod-format.ts';

export type EventInput = Record<string, string | Record<string, string> | undefined>;

/** Validates and flattens an event into stream fields (labels as JSON text). */
export function eventFields(input: EventInput): { ok: true; fields: string[] } | { ok: false; message: string } {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined) continue;
    flat[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  const schema = flat.event === 'retire' ? retireEventSchema : registerEventSchema;
  const result = schema.safeParse(flat);
  if (!result.success) return { ok: false, message: formatZodIssues(result.error.issues, flat) };
  return { ok: true, fields: Object.entries(flat).flat() };
}

export async function publish(redis: Redis, stream: string, fields: readonly string[]): Promise<string> {
  return (await redis.xadd(stream, '*', ...fields)) as string;
}

/** Adds many events in pipelined chunks; returns their stream ids in order. */
export async function publishMany(redis: Redis, stream: string, events: readonly (readonly string[])[], chunk = 500): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < events.length; i += chunk) {
    const pipeline = redis.pipeline();
    for (const fields of events.slice(i, i + chunk)) pipeline.xadd(stream, '*', ...fields);
    const results = (await pipeline.exec()) ?? [];
    for (const [err, id] of results) {
      if (err) throw err;
      ids.push(String(id));
    }
  }
  return ids;
}

export type { RegisterEvent, RetireEvent };
