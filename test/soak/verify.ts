/**
 * The soak's verdict, pure: what the cluster, the dead-letter stream and the consumer group
 * hold at quiescence, and every entry state the watch saw on the way, checked against the
 * events published and what each had to do.
 */
import { compareStreamIds } from '../../src/util/stream-id.ts';
import type { ExpectedEntry, PlannedEvent } from './workload.ts';

/** A managed WorkloadEntry as read back (final list) or seen on the watch. */
export interface ObservedEntry {
  name: string;
  vpsId: string | undefined;
  streamId: string | undefined;
  address: string | undefined;
  country: string | undefined;
}

export interface Findings {
  /** Entries the model expects and the cluster does not hold. */
  lost: string[];
  /** Entries held with other fields than the model's, or that the model does not expect. */
  wrong: string[];
  /** Events not acknowledged at the end. */
  pending: number;
  /** Invalid events not in the dead-letter stream. */
  deadLetterMissing: string[];
  /** Dead letters of events that were valid (or not published by the soak). */
  deadLetterUnexpected: string[];
  /** Invalid events dead-lettered more than once. */
  deadLetterDuplicated: string[];
  /** States seen on the watch that no event asked for, or a VPS going back to an older event. */
  history: string[];
  /** Published events without an outcome record. */
  outcomeMissing: string[];
  /** Outcome records that say what the event did not do (superseded for a valid event, trimmed for one applied, ...). */
  outcomeUntrue: string[];
  /** Events with more than one outcome record on the stream at the end. */
  outcomeDuplicated: string[];
  /** Events sigma-api heard more than one outcome of while it followed the stream (outcome-tail.ts). */
  heardTwice: string[];
  /** How many may be heard twice: a failover that loses unreplicated writes re-applies at most --concurrency events. */
  heardTwiceAllowed: number;
}

export function discrepancies(findings: Findings): number {
  return (
    findings.lost.length +
    findings.wrong.length +
    findings.pending +
    findings.deadLetterMissing.length +
    findings.deadLetterUnexpected.length +
    findings.deadLetterDuplicated.length +
    findings.history.length +
    findings.outcomeMissing.length +
    findings.outcomeUntrue.length +
    findings.outcomeDuplicated.length +
    Math.max(0, findings.heardTwice.length - findings.heardTwiceAllowed)
  );
}

/** An outcome record as the verdict reads it (at the end, or as sigma-api heard it). */
export interface ObservedOutcome {
  sourceId: string;
  outcome: string;
}

export interface VerifyInput {
  expected: Map<string, ExpectedEntry>;
  events: readonly PlannedEvent[];
  finalEntries: readonly ObservedEntry[];
  deadLetterSourceIds: readonly string[];
  pending: number;
  /** Every state the watch saw, in the order the API server sent them (add and modify). */
  history: readonly ObservedEntry[];
  /** Every record of the outcome stream at the end. */
  outcomes: readonly ObservedOutcome[];
  /** Every record sigma-api's reader heard while the run went on. */
  heard: readonly ObservedOutcome[];
  /** See Findings.heardTwiceAllowed. */
  heardTwiceAllowed: number;
}

/**
 * What an event's outcome may truly say: a dead letter for an invalid one; `applied` for a
 * register; for a retire of a registered VPS `deleted`, or `unchanged` when its entry had been
 * deleted behind the daemon (a fault does that); `unchanged` for a retire of an unknown VPS. The
 * soak publishes no stale event and trims nothing, so `superseded` and `trimmed` are never true.
 */
function trueOutcomes(event: PlannedEvent): readonly string[] {
  if (event.expect === 'dead-letter') return ['dead-lettered'];
  if (field(event.fields, 'event') === 'retire') return event.expect === 'applied' ? ['deleted', 'unchanged'] : ['unchanged'];
  return ['applied'];
}

function describe(entry: ObservedEntry | ExpectedEntry): string {
  const streamId = 'source' in entry ? entry.source.streamId : entry.streamId;
  return `${entry.name} (vps ${entry.vpsId ?? '?'}, ${entry.address ?? '?'}, ${entry.country ?? '?'}, stream-id ${streamId ?? '?'})`;
}

function field(fields: readonly (string | Buffer)[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (String(fields[i]) === name) return String(fields[i + 1]);
  return undefined;
}

export function verify(input: VerifyInput): Findings {
  const findings: Findings = { lost: [], wrong: [], pending: input.pending, deadLetterMissing: [], deadLetterUnexpected: [], deadLetterDuplicated: [], history: [], outcomeMissing: [], outcomeUntrue: [], outcomeDuplicated: [], heardTwice: [], heardTwiceAllowed: input.heardTwiceAllowed };

  const held = new Map(input.finalEntries.map((e) => [e.name, e]));
  for (const [name, want] of input.expected) {
    const got = held.get(name);
    if (got === undefined) findings.lost.push(describe(want));
    else if (got.vpsId !== want.vpsId || got.address !== want.address || got.country !== want.country || got.streamId !== want.source.streamId) {
      findings.wrong.push(`${describe(got)}; expected ${describe(want)}`);
    }
  }
  for (const got of input.finalEntries) if (!input.expected.has(got.name)) findings.wrong.push(`${describe(got)}; expected no such entry`);

  const byId = new Map(input.events.flatMap((e) => (e.streamId === undefined ? [] : [[e.streamId, e] as const])));
  const seen = new Map<string, number>();
  for (const id of input.deadLetterSourceIds) seen.set(id, (seen.get(id) ?? 0) + 1);
  for (const event of input.events) {
    if (event.expect !== 'dead-letter' || event.streamId === undefined) continue;
    const count = seen.get(event.streamId) ?? 0;
    if (count === 0) findings.deadLetterMissing.push(`${event.streamId} (${event.kind})`);
    if (count > 1) findings.deadLetterDuplicated.push(`${event.streamId} (${event.kind}) ×${count}`);
  }
  for (const id of seen.keys()) {
    const event = byId.get(id);
    if (event?.expect !== 'dead-letter') findings.deadLetterUnexpected.push(`${id} (${event?.kind ?? 'not published by the soak'})`);
  }

  // Exactly one outcome per event, saying what the event did.
  const outcomesOf = new Map<string, string[]>();
  for (const { sourceId, outcome } of input.outcomes) outcomesOf.set(sourceId, [...(outcomesOf.get(sourceId) ?? []), outcome]);
  for (const event of input.events) {
    if (event.streamId === undefined) continue;
    const recorded = outcomesOf.get(event.streamId) ?? [];
    if (recorded.length === 0) findings.outcomeMissing.push(`${event.streamId} (${event.kind})`);
    if (recorded.length > 1) findings.outcomeDuplicated.push(`${event.streamId} (${event.kind}): ${recorded.join(', ')}`);
    const untrue = recorded.filter((o) => !trueOutcomes(event).includes(o));
    if (untrue.length > 0) findings.outcomeUntrue.push(`${event.streamId} (${event.kind}, expected ${trueOutcomes(event).join(' or ')}): ${untrue.join(', ')}`);
  }
  const heardOf = new Map<string, string[]>();
  for (const { sourceId, outcome } of input.heard) heardOf.set(sourceId, [...(heardOf.get(sourceId) ?? []), outcome]);
  for (const [sourceId, heard] of heardOf) if (heard.length > 1) findings.heardTwice.push(`${sourceId}: ${heard.join(', ')}`);

  // Every state on the way must be one a valid register asked for, and a VPS's states must
  // follow its events' stream order: an older event's state after a newer one is a lost update.
  const latest = new Map<string, string>();
  for (const seenEntry of input.history) {
    const source = seenEntry.streamId === undefined ? undefined : byId.get(seenEntry.streamId);
    const asked = source !== undefined && source.expect === 'applied' && field(source.fields, 'event') === 'register';
    if (!asked || field(source.fields, 'vps_id') !== seenEntry.vpsId || field(source.fields, 'name') !== seenEntry.name || seenEntry.address === undefined || field(source.fields, 'address') !== seenEntry.address) {
      findings.history.push(`${describe(seenEntry)} matches no applied register event`);
      continue;
    }
    const vpsId = seenEntry.vpsId ?? '';
    const before = latest.get(vpsId);
    if (before !== undefined && compareStreamIds(seenEntry.streamId ?? '', before) < 0) findings.history.push(`${describe(seenEntry)} seen after the state of ${before}: an older event applied over a newer one`);
    else latest.set(vpsId, seenEntry.streamId ?? '');
  }
  return findings;
}
