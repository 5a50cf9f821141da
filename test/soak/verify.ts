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
}

export function discrepancies(findings: Findings): number {
  return findings.lost.length + findings.wrong.length + findings.pending + findings.deadLetterMissing.length + findings.deadLetterUnexpected.length + findings.deadLetterDuplicated.length + findings.history.length;
}

export interface VerifyInput {
  expected: Map<string, ExpectedEntry>;
  events: readonly PlannedEvent[];
  finalEntries: readonly ObservedEntry[];
  deadLetterSourceIds: readonly string[];
  pending: number;
  /** Every state the watch saw, in the order the API server sent them (add and modify). */
  history: readonly ObservedEntry[];
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
  const findings: Findings = { lost: [], wrong: [], pending: input.pending, deadLetterMissing: [], deadLetterUnexpected: [], deadLetterDuplicated: [], history: [] };

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
