/**
 * `edge-registrar status VPS_ID`: one VPS as every part of the system sees it: its desired
 * state in Redis, its WorkloadEntry as it stands, the last outcome the daemon recorded for it
 * (with the event's stream id), and whether the managed Telemetry attributes its address. The
 * reads are here; describeStatus is pure.
 */
import * as k8s from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL, makeApiClient } from '../kube/client.ts';
import { celString, envoyAddressForm, isShardTagOf } from '../mesh-telemetry/tag-expressions.ts';
import { TELEMETRY_COORDINATES, UNMAPPED_ANNOTATION, isManagedTelemetry, type StoredTelemetry } from '../mesh-telemetry/telemetry-object.ts';
import { LEADER_ANNOTATION, STREAM_ID_ANNOTATION, VPS_ID_ANNOTATION, isManaged } from '../policy/markers.ts';
import type { DaemonKeys } from '../redis/keys.ts';
import { fieldsToRecord } from '../sync/event.ts';
import type { OutcomeRecord } from '../sync/outcome.ts';

/** How far back the outcome stream is searched for the VPS's last record. */
export const OUTCOME_SEARCH_LIMIT = 10_000;

export interface VpsStatus {
  vpsId: string;
  desired: { state: 'registered' | 'retired' | 'unknown'; name?: string; address?: string; country?: string; streamId?: string; updatedAt?: string };
  entry: { exists: boolean; name?: string; address?: string; managed?: boolean; vpsId?: string; streamId?: string; leader?: string; inStep?: boolean };
  lastOutcome?: OutcomeRecord & { id: string };
  telemetry: { checked: false; reason: string } | { checked: true; attributed: boolean; name: string; detail: string };
}

export interface StatusSources {
  redis: Redis;
  keys: DaemonKeys;
  kubeConfig: k8s.KubeConfig;
  namespace: string;
  istioApiVersion: string;
  /**
   * The managed Telemetry, looked at whether or not per-VPS metrics were said to be on: its
   * absence then means they are off. `required` (--telemetry): they should be on, so an
   * absent Telemetry is a finding, not a setting.
   */
  telemetry: { namespace: string; name: string; vpsTag: string; required: boolean };
}

async function lastOutcome(redis: Redis, outcomes: string, vpsId: string): Promise<(OutcomeRecord & { id: string }) | undefined> {
  let searched = 0;
  for (let end = '+'; searched < OUTCOME_SEARCH_LIMIT; ) {
    const page = (await redis.xrevrange(outcomes, end, '-', 'COUNT', 500)) as [string, string[]][];
    for (const [id, raw] of page) {
      const record = fieldsToRecord(raw);
      if (record.vps_id === vpsId) return { ...(record as unknown as OutcomeRecord), id };
    }
    searched += page.length;
    if (page.length < 500) return undefined;
    end = `(${page.at(-1)?.[0] ?? '0-0'}`;
  }
  return undefined;
}

export async function readVpsStatus(vpsId: string, sources: StatusSources): Promise<VpsStatus> {
  const { redis, keys } = sources;
  const [state, outcome] = await Promise.all([redis.hgetall(keys.vps(vpsId)), lastOutcome(redis, keys.outcomes, vpsId)]);
  const desired: VpsStatus['desired'] =
    state.state === undefined
      ? { state: 'unknown' }
      : { state: state.state === 'registered' ? 'registered' : 'retired', ...(state.name ? { name: state.name } : {}), ...(state.address ? { address: state.address } : {}), ...(state.country ? { country: state.country } : {}), ...(state.stream_id ? { streamId: state.stream_id } : {}), ...(state.updated_at ? { updatedAt: state.updated_at } : {}) };
  const name = desired.name ?? outcome?.name;
  const custom = makeApiClient(sources.kubeConfig, k8s.CustomObjectsApi);
  let entry: VpsStatus['entry'] = { exists: false };
  if (name !== undefined) {
    try {
      const stored = (await custom.getNamespacedCustomObject({ group: WORKLOAD_ENTRY_GROUP, version: sources.istioApiVersion, namespace: sources.namespace, plural: WORKLOAD_ENTRY_PLURAL, name })) as { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: { address?: string } };
      const annotations = stored.metadata?.annotations ?? {};
      entry = {
        exists: true,
        name,
        ...(stored.spec?.address !== undefined ? { address: stored.spec.address } : {}),
        managed: isManaged(stored.metadata?.labels),
        ...(annotations[VPS_ID_ANNOTATION] !== undefined ? { vpsId: annotations[VPS_ID_ANNOTATION] } : {}),
        ...(annotations[STREAM_ID_ANNOTATION] !== undefined ? { streamId: annotations[STREAM_ID_ANNOTATION] } : {}),
        ...(annotations[LEADER_ANNOTATION] !== undefined ? { leader: annotations[LEADER_ANNOTATION] } : {}),
        inStep: desired.state === 'registered' && annotations[STREAM_ID_ANNOTATION] === desired.streamId && annotations[VPS_ID_ANNOTATION] === vpsId,
      };
    } catch (error) {
      if (!(error instanceof k8s.ApiException && error.code === 404)) throw error;
      entry = { exists: false, name };
    }
  }
  return { vpsId, desired, entry, ...(outcome !== undefined ? { lastOutcome: outcome } : {}), telemetry: await telemetryStatus(sources, desired) };
}

async function telemetryStatus(sources: StatusSources, desired: VpsStatus['desired']): Promise<VpsStatus['telemetry']> {
  const { namespace, name, vpsTag, required } = sources.telemetry;
  const where = `${namespace}/${name}`;
  const custom = makeApiClient(sources.kubeConfig, k8s.CustomObjectsApi);
  let telemetry: StoredTelemetry;
  try {
    telemetry = (await custom.getNamespacedCustomObject({ ...TELEMETRY_COORDINATES, namespace, name })) as StoredTelemetry;
  } catch (error) {
    const code = error instanceof k8s.ApiException ? error.code : undefined;
    if (code === 404 && required) return { checked: true, attributed: false, name: where, detail: 'the Telemetry does not exist' };
    if (code === 404) return { checked: false, reason: `per-VPS metrics are off: there is no Telemetry ${where} (give --telemetry-namespace and --telemetry-name if yours is elsewhere)` };
    if (code === 403 && !required) return { checked: false, reason: `this kubeconfig may not read Telemetry ${where}` };
    throw error;
  }
  if (!isManagedTelemetry(telemetry)) return { checked: true, attributed: false, name: where, detail: 'the Telemetry is not managed by edge-registrar' };
  if (desired.state !== 'registered' || desired.address === undefined || desired.name === undefined) return { checked: false, reason: `per-VPS metrics are on (${where}), but the VPS is not registered` };
  return { checked: true, name: where, ...attributes(telemetry, vpsTag, desired.address, desired.name) };
}

/**
 * Whether the VPS needs someone's attention: nothing of it was ever applied, or its last event
 * did not take effect. `status` exits 1 then.
 */
export function needsAttention(status: VpsStatus): boolean {
  return status.desired.state === 'unknown' || status.lastOutcome?.outcome === 'dead-lettered';
}

/** Whether one of the Telemetry's `vpsTag` expressions maps `address` (as Envoy writes it) to `name`. */
export function attributes(telemetry: StoredTelemetry, vpsTag: string, address: string, name: string): { attributed: boolean; detail: string } {
  const key = envoyAddressForm(address);
  if (key === undefined) return { attributed: false, detail: `${address} is not an IP address` };
  // A lookup maps the address to the name ('addr':'name'), or, where every address of a
  // bucket shares one value, lists it in a set ahead of that value ((a in {'addr':0,...}?'name':...)).
  const pair = `${celString(key)}:${celString(name)}`;
  const inSet = (expression: string): boolean => {
    const at = expression.indexOf(`${celString(key)}:0`);
    if (at < 0) return false;
    const value = /^[^}]*\}\?('(?:[^'\\]|\\.)*')/.exec(expression.slice(at))?.[1];
    return value === celString(name);
  };
  const metrics = (telemetry.spec as { metrics?: { overrides?: { tagOverrides?: Record<string, { value?: string }> }[] }[] } | undefined)?.metrics ?? [];
  for (const metric of metrics) {
    for (const override of metric.overrides ?? []) {
      for (const [tag, { value }] of Object.entries(override.tagOverrides ?? {})) {
        if (isShardTagOf(tag, vpsTag) && value !== undefined && (value.includes(pair) || inSet(value))) return { attributed: true, detail: `tag ${tag} maps ${key} to ${name}` };
      }
    }
  }
  const unmapped = Number(telemetry.metadata?.annotations?.[UNMAPPED_ANNOTATION] ?? 0);
  if (unmapped > 0) return { attributed: false, detail: `no ${vpsTag} tag maps ${key} to ${name}: the whole fleet would pass the Telemetry's limit, so it leaves out the ${unmapped} newest registrations, this one among them, and tags their requests unregistered (edge_registrar_telemetry_unmapped_vps; doctor says which limit)` };
  return { attributed: false, detail: `no ${vpsTag} tag maps ${key} to ${name} yet (the keeper writes changes within seconds; see edge_registrar_telemetry_refused)` };
}

/** `: [rule] reason`, the rule left out where the reason starts with it already (a denial's own words do). */
function ruleAndReason(outcome: OutcomeRecord): string {
  const rule = outcome.rule !== undefined && outcome.reason?.startsWith(`[${outcome.rule}]`) !== true ? ` [${outcome.rule}]` : '';
  return `${rule}${outcome.reason !== undefined ? `: ${outcome.reason}` : ''}`;
}

/** The status as a person reads it. */
export function describeStatus(status: VpsStatus): string {
  const lines = [`VPS ${status.vpsId}`];
  const { desired, entry, lastOutcome: outcome, telemetry } = status;
  lines.push(
    desired.state === 'unknown'
      ? outcome === undefined
        ? '  desired:   unknown to edge-registrar (no register or retire applied)'
        : `  desired:   none: no event of this VPS has taken effect (its last one was ${outcome.outcome}, below)`
      : `  desired:   ${desired.state}${desired.name ? ` as ${desired.name}` : ''}${desired.address ? `, ${desired.address}` : ''}${desired.country ? `, ${desired.country}` : ''} (event ${desired.streamId ?? '?'}, ${desired.updatedAt ?? '?'})`,
  );
  if (!entry.exists) lines.push(`  entry:     ${entry.name === undefined ? 'none' : `${entry.name} does not exist`}`);
  else {
    const step = entry.inStep === true ? ', in step' : desired.state === 'registered' ? ', NOT in step with the desired state (the resync repairs it)' : '';
    lines.push(`  entry:     ${entry.name} ${entry.address ?? '(no address)'}${entry.managed === true ? '' : ' (not managed by edge-registrar)'}, event ${entry.streamId ?? '?'}${entry.leader ? `, written by ${entry.leader}` : ''}${step}`);
  }
  lines.push(
    outcome === undefined
      ? `  outcome:   none recorded (or older than the last ${OUTCOME_SEARCH_LIMIT.toLocaleString('en')} outcomes)`
      : `  outcome:   ${outcome.outcome} (event ${outcome.source_id}${outcome.event ? `, ${outcome.event}` : ''}, at ${outcome.at}; outcome record ${outcome.id})${ruleAndReason(outcome)}`,
  );
  if (outcome?.dlq_id !== undefined) lines.push(`  dead letter: ${outcome.dlq_id} (edge-registrar dlq show ${outcome.dlq_id}; after fixing the cause, dlq replay ${outcome.dlq_id})`);
  lines.push(telemetry.checked ? `  telemetry: ${telemetry.attributed ? 'attributed' : 'NOT attributed'} in ${telemetry.name}: ${telemetry.detail}` : `  telemetry: not checked: ${telemetry.reason}`);
  return `${lines.join('\n')}\n`;
}
