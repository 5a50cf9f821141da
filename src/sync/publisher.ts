/**
 * Producing events: what sigma-api does, for operators (`publish`), for `backfill` and for
 * tests. An event is checked before it is added, with the daemon's own code: its parse
 * (event.ts) and, given the policy, the content rules its planner runs before it writes
 * (planner.ts). So an event these helpers publish is never dead-lettered for its fields or its
 * content; what they cannot know (another VPS holding the address, the webhook's cluster rules)
 * still comes back as an outcome.
 */
import type { Redis } from 'ioredis';
import { parseEvent, type RegisterEvent, type RetireEvent } from './event.ts';
import type { OutcomeRuleId } from './outcome-rules.ts';
import { planRegister, type PlanContext } from './planner.ts';

export type EventInput = Record<string, string | Record<string, string> | undefined>;

export type CheckedEvent = { ok: true; fields: string[] } | { ok: false; rule: OutcomeRuleId; message: string };

/**
 * Flattens an event into stream fields (labels as JSON text) and checks it as the daemon
 * would: always against the contract, and against the content rules when `rules` is given.
 */
export function eventFields(input: EventInput, rules?: PlanContext): CheckedEvent {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined) continue;
    flat[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  const parsed = parseEvent(flat);
  if (!parsed.ok) return { ok: false, rule: parsed.rejection.rule, message: parsed.rejection.reason };
  if (rules !== undefined && parsed.event.event === 'register') {
    // The stream id is the daemon's to stamp; none is known yet, and no rule reads it.
    const plan = planRegister(parsed.event, '0-0', rules);
    if (!plan.ok) return { ok: false, rule: plan.rule, message: plan.reason };
  }
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
