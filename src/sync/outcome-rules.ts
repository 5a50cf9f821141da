/**
 * Every rule id an outcome record, and the dead letter beside it, can carry: the event rules
 * below, which only the sync daemon applies, and the content rules of a WorkloadEntry
 * (policy/types.ts), which the daemon checks before it writes. docs/event-contract.md lists
 * exactly these (test/unit/sync-contract.test.ts keeps the two equal), so a producer can look
 * up any `rule` it hears back.
 */
import { CONTENT_RULES, type ContentRuleId } from '../policy/types.ts';

export const EVENT_RULES = {
  'event.type': 'the `event` field is missing or is neither `register` nor `retire`',
  'event.schema': "a field is missing or does not have the contract's form (the reason names the field, the value and what is expected)",
  'event.labels': "the event's extra `labels` set a label edge-registrar sets itself (`app`, `country`, `version`, the managed-by marker or Istio's)",
  'address.unique': 'the address is registered to another VPS at that point in the stream (the holder must be retired or moved first)',
  'name.unique': 'the name is used by another VPS at that point in the stream',
  'webhook.denied': "the admission webhook refused the daemon's write; the reason lists each rule it broke, in brackets",
  'kubernetes.invalid': "the API server refused the daemon's write as invalid (Istio's CRD schema, say)",
  'event.retries-exhausted': 'applying it failed `--max-attempts` times for no transient reason; the reason holds the last error',
  'event.poison': 'a daemon started applying it 5 times and stopped (crashed, was killed, lost Redis) before finishing each time',
} as const;

export type EventRuleId = keyof typeof EVENT_RULES;

/** A rule an outcome can carry. */
export type OutcomeRuleId = EventRuleId | ContentRuleId;

export const OUTCOME_RULES: readonly OutcomeRuleId[] = [...(Object.keys(EVENT_RULES) as EventRuleId[]), ...CONTENT_RULES];
