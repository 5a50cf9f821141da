/**
 * Keeps the managed Telemetry in step with the registered fleet, on the Lease holder only:
 * a change to the fleet is written once the fleet has been quiet for `coalesceMs`, or at the
 * latest `maxWaitMs` after the first unwritten change, so a burst (a 5,000-VPS backfill) is a
 * handful of renders and writes, never one per event; every `repairIntervalMs` the object in the
 * cluster is read and compared again, which repairs drift (an edit, a deletion). Writes are
 * server-side apply under its own field manager. A Telemetry of that name that does not carry
 * our managed-by label is never changed: the pass is refused, logged and counted.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { makeApiClient } from '../kube/client.ts';
import type { TelemetryMetrics } from '../observability/metrics.ts';
import { backoffDelay } from '../util/backoff.ts';
import type { SourceIdentity } from './source-identity.ts';
import { largestFittingPrefix, mappedIdentities, mappingOrder, type FleetMember } from './fit-mapping.ts';
import { TagRenderError, isShardTagOf } from './tag-expressions.ts';
import { FLEET_DIGEST_ANNOTATION, TELEMETRY_COORDINATES, isManagedTelemetry, renderTelemetry, type RenderedTelemetry, type StoredTelemetry, type TelemetryObject, type TelemetryOptions } from './telemetry-object.ts';

export const TELEMETRY_FIELD_MANAGER = 'edge-registrar-telemetry';
/** A failed write is tried again after this, doubling (with jitter) up to the repair interval. */
const RETRY_BASE_MS = 5_000;

/** Why the Telemetry is not written: each is decided by the fleet and the cluster, so retrying on a timer would only repeat it. */
export type RefusalReason = 'not-ours' | 'object-too-large' | 'expression-too-large';
const REFUSAL_REASONS: readonly RefusalReason[] = ['not-ours', 'object-too-large', 'expression-too-large'];

export type KeeperOutcome = 'applied' | 'unchanged' | 'refused' | 'failed';

/** A render held against the limits: the object and its size, or why it cannot be written. */
type Rendering = { ok: true; rendered: RenderedTelemetry; bytes: number } | { ok: false; reason: Exclude<RefusalReason, 'not-ours'>; bytes?: number; detail: Record<string, unknown>; message: string };

export interface TelemetryKeeperDeps {
  kubeConfig: k8s.KubeConfig;
  options: TelemetryOptions;
  /** The source identity to write, read at every pass (the policy's app and version can be reloaded); undefined: off. */
  sourceIdentity?: () => SourceIdentity | undefined;
  /** The registered fleet now. */
  fleet: () => readonly FleetMember[];
  isLeader: () => boolean;
  coalesceMs: number;
  /** A change waits at most this long while others keep coming (default: the larger of 5 s and coalesceMs). */
  maxWaitMs?: number;
  repairIntervalMs: number;
  metrics: TelemetryMetrics;
  logger: Logger;
}

/** Key order fixed, so two equal objects compare equal as text. */
function stable(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** What of a Telemetry we set: the spec, our labels and our annotations. */
function ourPart(object: StoredTelemetry, wanted: TelemetryObject): string {
  const pick = (source: Record<string, string> | undefined, keys: string[]) => Object.fromEntries(keys.map((k) => [k, source?.[k]]));
  return stable({
    spec: object.spec,
    labels: pick(object.metadata?.labels, Object.keys(wanted.metadata.labels)),
    annotations: pick(object.metadata?.annotations, Object.keys(wanted.metadata.annotations)),
  });
}

export class TelemetryKeeper {
  readonly #deps: TelemetryKeeperDeps;
  readonly #api: k8s.CustomObjectsApi;
  #dueAt: number | undefined = 0; // a first pass as soon as this replica leads
  /** When the oldest change not yet written arrived. */
  #firstUnwritten: number | undefined;
  #lastPass = 0;
  #wasLeader = false;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<KeeperOutcome> | undefined;
  #stopped = false;
  /** The refusal in force, logged once when it began (not once a pass). */
  #refusal: RefusalReason | undefined;
  #failures = 0;
  #sourceIdentityState: string | undefined;
  /** Who the last mapping written holds (vps id, or name): kept first when the fleet must be cut. */
  #lastMapped: ReadonlySet<string> | undefined;
  /** How many VPSs were left out when that was last logged (0: none). */
  #unmappedLogged = 0;

  constructor(deps: TelemetryKeeperDeps) {
    this.#deps = deps;
    this.#api = makeApiClient(deps.kubeConfig, k8s.CustomObjectsApi);
  }

  /** The fleet changed: write once it has been quiet for coalesceMs, or maxWaitMs after the first unwritten change. */
  fleetChanged(): void {
    const now = Date.now();
    this.#firstUnwritten ??= now;
    this.#dueAt = Math.min(now + this.#deps.coalesceMs, this.#firstUnwritten + (this.#deps.maxWaitMs ?? Math.max(5_000, this.#deps.coalesceMs)));
  }

  start(): void {
    const tick = async (): Promise<void> => {
      if (this.#stopped) return;
      const leader = this.#deps.isLeader();
      if (leader && !this.#wasLeader) this.#dueAt = Date.now();
      this.#wasLeader = leader;
      const now = Date.now();
      if (leader && ((this.#dueAt !== undefined && now >= this.#dueAt) || now - this.#lastPass >= this.#deps.repairIntervalMs)) {
        await this.sync();
      }
      // stop() clears this timer; a tick that starts after stop() returns at once.
      this.#timer = setTimeout(() => void tick(), 250);
    };
    void tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** One pass: render, compare with the cluster, write if different. */
  sync(): Promise<KeeperOutcome> {
    this.#running ??= this.#pass().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** The Telemetry for `fleet`, or why it cannot be written (an expression or the object over its limit). */
  #render(fleet: readonly FleetMember[], unmapped: number): Rendering {
    const { options } = this.#deps;
    let rendered: RenderedTelemetry;
    try {
      rendered = renderTelemetry({ ...options, sourceIdentity: this.#deps.sourceIdentity?.() ?? options.sourceIdentity }, fleet, unmapped);
    } catch (error) {
      if (!(error instanceof TagRenderError)) throw error;
      return { ok: false, reason: 'expression-too-large', detail: { vps: fleet.length, maxExpressionCodepoints: options.maxExpressionCodepoints, reason: error.message }, message: 'an expression would pass its codepoint budget (--telemetry-max-expression-codepoints; Envoy drops a tag whose expression passes 100,000)' };
    }
    const bytes = Buffer.byteLength(JSON.stringify(rendered.object));
    if (bytes > options.maxObjectBytes) {
      return { ok: false, reason: 'object-too-large', bytes, detail: { vps: rendered.vpsCount, bytes, maxObjectBytes: options.maxObjectBytes, metrics: options.metrics }, message: `${bytes} bytes for ${rendered.vpsCount} VPSs, over ${options.maxObjectBytes} (etcd refuses an object over 1.5 MiB); its tags are written once per metric (${options.metrics.length}): fewer metrics (--telemetry-metrics) fit a larger fleet` };
    }
    return { ok: true, rendered, bytes };
  }

  /**
   * What to write for this fleet: all of it when it fits; over a limit, the largest mapping
   * that claims nothing stale (fit-mapping.ts), the newest registrations left out; nothing
   * when not even one VPS fits.
   */
  async #fit(fleet: readonly FleetMember[]): Promise<{ written: Extract<Rendering, { ok: true }>; mapped: readonly FleetMember[]; over?: Extract<Rendering, { ok: false }> } | { refused: Extract<Rendering, { ok: false }> }> {
    const whole = this.#render(fleet, 0);
    if (whole.ok) return { written: whole, mapped: fleet };
    const ordered = mappingOrder(fleet, this.#lastMapped);
    // The object grows about linearly with the fleet: start near where the limit falls.
    const guess = whole.bytes === undefined ? ordered.length / 2 : (ordered.length * this.#deps.options.maxObjectBytes) / whole.bytes;
    const count = await largestFittingPrefix(ordered, (prefix) => this.#render(prefix, ordered.length - prefix.length).ok, guess);
    const mapped = ordered.slice(0, count);
    const partial = count === 0 ? undefined : this.#render(mapped, ordered.length - count);
    return partial?.ok === true ? { written: partial, mapped, over: whole } : { refused: whole };
  }

  async #pass(): Promise<KeeperOutcome> {
    const { options, metrics, logger } = this.#deps;
    const where = { namespace: options.namespace, name: options.name };
    this.#dueAt = undefined;
    this.#firstUnwritten = undefined;
    this.#lastPass = Date.now();
    try {
      const started = performance.now();
      const fleet = this.#deps.fleet();
      const fitted = await this.#fit(fleet);
      if ('refused' in fitted) {
        const { reason, detail, message } = fitted.refused;
        if (reason === 'object-too-large') metrics.objectBytes.set(fitted.refused.bytes ?? 0);
        return this.#refuse(reason, detail, `the Telemetry is not written: ${message}`);
      }
      const { rendered, bytes } = fitted.written;
      metrics.renderDuration.observe((performance.now() - started) / 1000);
      this.#reportSourceIdentity(rendered.sourceIdentity);
      metrics.objectBytes.set(bytes);
      metrics.shardTags.set(rendered.tags.filter((t) => isShardTagOf(t.tag, options.vpsTag)).length);
      metrics.largestExpression.set(Math.max(...rendered.tags.map((t) => t.expression.length)));
      const existing = await this.#get();
      if (existing !== undefined && !isManagedTelemetry(existing)) {
        return this.#refuse('not-ours', { telemetry: where, managedBy: existing.metadata?.labels?.['app.kubernetes.io/managed-by'] ?? null }, 'a Telemetry of this name exists and is not managed by edge-registrar; left alone (rename ours with --telemetry-name, or delete theirs)');
      }
      let outcome: KeeperOutcome = 'unchanged';
      if (existing === undefined || ourPart(existing, rendered.object) !== ourPart(rendered.object, rendered.object)) {
        await this.#api.patchNamespacedCustomObject(
          { ...TELEMETRY_COORDINATES, namespace: options.namespace, name: options.name, body: rendered.object, fieldManager: TELEMETRY_FIELD_MANAGER, force: true },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply),
        );
        outcome = 'applied';
        const previousDigest = existing?.metadata?.annotations?.[FLEET_DIGEST_ANNOTATION] ?? null;
        // The same digest as before means the object drifted from what we wrote: a repair.
        logger.info({ telemetry: where, vps: rendered.vpsCount, digest: rendered.digest, previousDigest, repair: previousDigest === rendered.digest, tags: rendered.tags.map((t) => t.tag), bytes }, 'managed Telemetry applied');
      }
      this.#lastMapped = mappedIdentities(fitted.mapped);
      this.#reportUnmapped(fleet, fitted.mapped, fitted.over);
      this.#failures = 0;
      metrics.writes.inc({ outcome });
      metrics.vps.set(rendered.vpsCount);
      metrics.lastApplied.set(Date.now() / 1000);
      return outcome;
    } catch (err) {
      this.#failures++;
      const delay = backoffDelay(this.#failures, { baseMs: RETRY_BASE_MS, maxMs: Math.max(RETRY_BASE_MS, this.#deps.repairIntervalMs) });
      metrics.writes.inc({ outcome: 'failed' });
      logger.warn({ telemetry: where, err, failures: this.#failures, retryInMs: delay }, 'managed Telemetry not written; will try again');
      this.#dueAt = Date.now() + delay;
      return 'failed';
    }
  }

  /**
   * The whole fleet written, or a part of it (over a limit): the gauges say which, and a log
   * line says so when it starts or the number left out changes, naming the first of them.
   */
  #reportUnmapped(fleet: readonly FleetMember[], mapped: readonly FleetMember[], over: Extract<Rendering, { ok: false }> | undefined): void {
    const { metrics, logger } = this.#deps;
    const unmapped = fleet.length - mapped.length;
    metrics.unmapped.set(unmapped);
    if (over === undefined) {
      this.#clearRefusal();
      this.#unmappedLogged = 0;
      return;
    }
    for (const r of REFUSAL_REASONS) metrics.refused.set({ reason: r }, r === over.reason ? 1 : 0);
    this.#refusal = over.reason;
    if (unmapped === this.#unmappedLogged) return;
    this.#unmappedLogged = unmapped;
    const kept = mappedIdentities(mapped);
    const leftOut = fleet.filter((v) => !kept.has(v.vpsId ?? v.name)).map((v) => v.name);
    logger.error(
      { ...over.detail, refusal: over.reason, mapped: mapped.length, unmapped, leftOut: leftOut.slice(0, 20) },
      `the Telemetry maps ${mapped.length} of ${fleet.length} VPSs: the whole fleet would not fit (${over.message}); the ${unmapped} newest registrations are left out and their requests tagged unregistered, so no address is ever counted as a VPS that no longer holds it`,
    );
  }

  /**
   * Not written, for a reason the same fleet and cluster would give again: counted, the gauge
   * set, one log line when the reason starts (not one a pass), and no retry on a timer: the
   * next change to the fleet, or the next repair pass, tries again.
   */
  #refuse(reason: RefusalReason, detail: Record<string, unknown>, message: string): KeeperOutcome {
    const { metrics, logger } = this.#deps;
    metrics.writes.inc({ outcome: 'refused' });
    for (const r of REFUSAL_REASONS) metrics.refused.set({ reason: r }, r === reason ? 1 : 0);
    if (this.#refusal !== reason) logger.error({ ...detail, refusal: reason }, message);
    this.#refusal = reason;
    return 'refused';
  }

  #clearRefusal(): void {
    if (this.#refusal === undefined) return;
    for (const r of REFUSAL_REASONS) this.#deps.metrics.refused.set({ reason: r }, 0);
    this.#deps.logger.info({ previousRefusal: this.#refusal }, 'managed Telemetry written again');
    this.#refusal = undefined;
  }

  /** The source identity's state as a gauge, and a log line whenever it changes (a refusal says why). */
  #reportSourceIdentity(identity: RenderedTelemetry['sourceIdentity']): void {
    const { metrics, logger } = this.#deps;
    for (const state of ['off', 'on', 'refused']) metrics.sourceIdentity.set({ state }, state === identity.state ? 1 : 0);
    if (identity.state === this.#sourceIdentityState) return;
    this.#sourceIdentityState = identity.state;
    if (identity.state === 'refused') logger.error({ reason: identity.reason }, "source identity overrides left out of the Telemetry: the fleet is too large for one expression per tag (the VPS tags stay; Kiali shows the gateway as the caller again)");
    else if (identity.state === 'on') logger.info('source identity overrides in the Telemetry: Istio source tags name each registered VPS');
  }

  async #get(): Promise<StoredTelemetry | undefined> {
    try {
      return (await this.#api.getNamespacedCustomObject({ ...TELEMETRY_COORDINATES, namespace: this.#deps.options.namespace, name: this.#deps.options.name })) as StoredTelemetry;
    } catch (error) {
      if (error instanceof k8s.ApiException && error.code === 404) return undefined;
      throw error;
    }
  }
}
