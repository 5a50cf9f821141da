/**
 * Prometheus metrics, on a registry of our own (not prom-client's global one) so tests and
 * several servers in one process never collide. Names follow Prometheus conventions:
 * `_total` counters, `_seconds` histograms for latency.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { droppedLogLines } from './logger.ts';

export function createRegistry(defaultMetrics: boolean): Registry {
  const registry = new Registry();
  if (defaultMetrics) {
    collectDefaultMetrics({ register: registry, prefix: 'edge_registrar_' });
    let reported = 0;
    new Counter({
      name: 'edge_registrar_log_lines_dropped_total',
      help: 'Log lines dropped because stdout did not take them as fast as they were written (the log buffer is bounded).',
      registers: [registry],
      collect() {
        const dropped = droppedLogLines();
        this.inc(dropped - reported);
        reported = dropped;
      },
    });
  }
  return registry;
}

export interface WebhookMetrics {
  requests: Counter<'handler' | 'operation' | 'decision'>;
  duration: Histogram<'handler'>;
  violations: Counter<'rule'>;
  badRequests: Counter<'handler' | 'reason'>;
  bodyBytesInFlight: Gauge;
  bodyBudgetBytes: Gauge;
  connectionsClosed: Counter<'reason'>;
  connectionLimit: Gauge;
  certificateExpiry: Gauge;
  certificateReloads: Counter<'result'>;
  policyReloads: Counter<'result'>;
  cacheSynced: Gauge<'resource'>;
  cacheRestarts: Counter<'resource'>;
}

export function createWebhookMetrics(registry: Registry): WebhookMetrics {
  return {
    requests: new Counter({
      name: 'edge_registrar_webhook_requests_total',
      help: 'Admission requests answered, by handler (mutate, validate), operation and decision (allowed, patched, denied, ignored).',
      labelNames: ['handler', 'operation', 'decision'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'edge_registrar_webhook_request_duration_seconds',
      help: 'Time to answer an admission request, from body received to response written.',
      labelNames: ['handler'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    violations: new Counter({
      name: 'edge_registrar_policy_violations_total',
      help: 'Rule violations found in admission requests, by rule id.',
      labelNames: ['rule'],
      registers: [registry],
    }),
    badRequests: new Counter({
      name: 'edge_registrar_webhook_bad_requests_total',
      help: 'Requests refused before any rule ran (malformed JSON, wrong content type, oversized, over the body budget, body too slow, not an AdmissionReview).',
      labelNames: ['handler', 'reason'],
      registers: [registry],
    }),
    bodyBytesInFlight: new Gauge({
      name: 'edge_registrar_webhook_body_bytes_in_flight',
      help: 'Bytes of admission request bodies held now (received so far of bodies being received, and those being parsed).',
      registers: [registry],
    }),
    connectionsClosed: new Counter({
      name: 'edge_registrar_webhook_connections_closed_total',
      help: "Connections the webhook closed to keep its connections bounded, by reason (total: over --max-connections; per-peer: over a peer's limit; untrusted-total: over what untrusted peers may hold together; handshake-timeout: no finished TLS handshake within 5 s; no-request: no request after the handshake; idle-untrusted: an idle keep-alive of a peer not trusted as the API server).",
      labelNames: ['reason'],
      registers: [registry],
    }),
    connectionLimit: new Gauge({ name: 'edge_registrar_webhook_connection_limit', help: 'Open connections the webhook accepts at most (--max-connections).', registers: [registry] }),
    bodyBudgetBytes: new Gauge({
      name: 'edge_registrar_webhook_body_budget_bytes',
      help: 'Bytes of request bodies the webhook holds at once at most; beyond it requests are shed with 429.',
      registers: [registry],
    }),
    certificateExpiry: new Gauge({
      name: 'edge_registrar_webhook_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the serving certificate in use, as a Unix timestamp.',
      registers: [registry],
    }),
    certificateReloads: new Counter({
      name: 'edge_registrar_webhook_certificate_reloads_total',
      help: 'Serving certificate reloads (changed files, or the self-managed Secret renewed), by result (ok, error).',
      labelNames: ['result'],
      registers: [registry],
    }),
    policyReloads: new Counter({
      name: 'edge_registrar_policy_reloads_total',
      help: 'Policy file reloads, by result (ok, error); on error the previous policy stays in force.',
      labelNames: ['result'],
      registers: [registry],
    }),
    cacheSynced: new Gauge({
      name: 'edge_registrar_cache_synced',
      help: '1 when the watched cache of a resource has listed at least once.',
      labelNames: ['resource'],
      registers: [registry],
    }),
    cacheRestarts: new Counter({
      name: 'edge_registrar_cache_watch_restarts_total',
      help: 'Watch failures that restarted a cache informer, by resource.',
      labelNames: ['resource'],
      registers: [registry],
    }),
  };
}

export interface SyncMetrics {
  events: Counter<'event' | 'outcome'>;
  applyDuration: Histogram<'operation'>;
  eventDuration: Histogram;
  deadLetters: Counter<'rule'>;
  retries: Counter<'reason'>;
  leader: Gauge;
  streamLag: Gauge;
  pending: Gauge;
  managedEntries: Gauge<'country'>;
  vpsInfo: Gauge<'name' | 'address' | 'country' | 'vps_id'>;
  resyncChanges: Counter<'action'>;
  resyncRuns: Counter<'outcome'>;
  deadLetterLength: Gauge;
  outcomeLength: Gauge;
  kubeEvents: Counter<'result'>;
  replicaWaits: Histogram<'result'>;
  rewinds: Counter<'reason'>;
}

export function createSyncMetrics(registry: Registry): SyncMetrics {
  return {
    events: new Counter({
      name: 'edge_registrar_sync_events_total',
      help: 'Stream events handled, by event type (register, retire, unknown) and outcome (as on the outcome stream: applied, deleted, unchanged, superseded, dead-lettered, trimmed).',
      labelNames: ['event', 'outcome'],
      registers: [registry],
    }),
    applyDuration: new Histogram({
      name: 'edge_registrar_sync_apply_duration_seconds',
      help: 'Kubernetes write latency for one event (server-side apply or owned delete).',
      labelNames: ['operation'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    eventDuration: new Histogram({
      name: 'edge_registrar_sync_event_duration_seconds',
      help: 'Time to handle one event end to end (state read, write, commit and ack).',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    deadLetters: new Counter({
      name: 'edge_registrar_sync_dead_letters_total',
      help: 'Events moved to the dead-letter stream, by rule.',
      labelNames: ['rule'],
      registers: [registry],
    }),
    retries: new Counter({
      name: 'edge_registrar_sync_retries_total',
      help: 'Failed attempts retried with backoff, by what failed (kubernetes, redis, unexpected: bounded by --max-attempts).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    leader: new Gauge({ name: 'edge_registrar_sync_leader', help: '1 while this replica holds the Lease and consumes.', registers: [registry] }),
    streamLag: new Gauge({ name: 'edge_registrar_sync_stream_lag', help: 'Entries in the stream not yet delivered to the consumer group: those after its last-delivered-id, counted exactly up to 1000.', registers: [registry] }),
    pending: new Gauge({ name: 'edge_registrar_sync_pending', help: 'Entries delivered to the group but not yet acknowledged.', registers: [registry] }),
    managedEntries: new Gauge({ name: 'edge_registrar_sync_managed_entries', help: 'Registered VPSs (desired managed entries), by country.', labelNames: ['country'], registers: [registry] }),
    vpsInfo: new Gauge({
      name: 'edge_registrar_vps_info',
      help: 'One series per registered VPS, value 1: the join key from address to VPS for per-VPS dashboards.',
      labelNames: ['name', 'address', 'country', 'vps_id'],
      registers: [registry],
    }),
    resyncChanges: new Counter({ name: 'edge_registrar_sync_resync_changes_total', help: 'Drift repairs, by action (restored, orphan_deleted, tombstoned, refused, corrupt_record; index_repaired: an address or name index entry that disagreed with the records; attempts_swept: attempt counts of events acknowledged outside the daemon).', labelNames: ['action'], registers: [registry] }),
    resyncRuns: new Counter({ name: 'edge_registrar_sync_resyncs_total', help: 'Drift-repair passes (desired state compared with the cluster), by outcome (completed, failed: tried again with back-off, term-ended: stopped when leadership ended).', labelNames: ['outcome'], registers: [registry] }),
    deadLetterLength: new Gauge({ name: 'edge_registrar_sync_dead_letter_entries', help: 'Entries in the dead-letter stream (XLEN; capped by --dlq-max-length).', registers: [registry] }),
    outcomeLength: new Gauge({ name: 'edge_registrar_sync_outcome_entries', help: 'Records in the outcome stream (XLEN; capped by --outcome-max-length).', registers: [registry] }),
    replicaWaits: new Histogram({
      name: 'edge_registrar_sync_replica_wait_seconds',
      help: 'WAITs for a replica to have the daemon\'s settling writes (--commit-replicas), by result (replicated; behind: none had them in time, and the event was held and waited for again).',
      labelNames: ['result'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    rewinds: new Counter({
      name: 'edge_registrar_sync_rewinds_total',
      help: 'Times the work in flight was left pending and the pending list read again in stream order (a lost commit found; an attempt that failed unexpectedly), by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    kubeEvents: new Counter({
      name: 'edge_registrar_sync_kube_events_total',
      help: 'Kubernetes Events about entries and the Lease, by result (created, series-updated, dropped-object-rate, dropped-global-rate, dropped-queue-full, failed).',
      labelNames: ['result'],
      registers: [registry],
    }),
  };
}

/** The managed Telemetry's keeper (per-VPS metric tags on the ingress gateway). */
export interface TelemetryMetrics {
  writes: Counter<'outcome'>;
  renderDuration: Histogram;
  vps: Gauge;
  shardTags: Gauge;
  largestExpression: Gauge;
  objectBytes: Gauge;
  lastApplied: Gauge;
  sourceIdentity: Gauge<'state'>;
  refused: Gauge<'reason'>;
  unmapped: Gauge;
}

export function createTelemetryMetrics(registry: Registry): TelemetryMetrics {
  return {
    writes: new Counter({
      name: 'edge_registrar_telemetry_syncs_total',
      help: 'Passes of the managed Telemetry keeper, by outcome (applied, unchanged, refused: not written, see edge_registrar_telemetry_refused; failed: the API call failed, tried again with back-off).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    renderDuration: new Histogram({
      name: 'edge_registrar_telemetry_render_duration_seconds',
      help: 'Time to render the Telemetry (its CEL expressions) from the registered fleet.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    vps: new Gauge({ name: 'edge_registrar_telemetry_vps', help: 'Registered VPSs the Telemetry in the cluster maps (compare with count(edge_registrar_vps_info)).', registers: [registry] }),
    shardTags: new Gauge({ name: 'edge_registrar_telemetry_shard_tags', help: 'Tags per dimension (vps, vps_1, ...): more than 1 once one expression would pass the codepoint limit.', registers: [registry] }),
    largestExpression: new Gauge({ name: 'edge_registrar_telemetry_expression_max_codepoints', help: "The longest CEL expression's size; Envoy drops a tag whose expression passes 100,000.", registers: [registry] }),
    objectBytes: new Gauge({ name: 'edge_registrar_telemetry_object_bytes', help: 'Size of the Telemetry object as rendered (JSON), written or not.', registers: [registry] }),
    refused: new Gauge({
      name: 'edge_registrar_telemetry_refused',
      help: 'Why the whole fleet is not in the Telemetry, 1 for the reason in force (not-ours: a Telemetry of that name without our label, nothing written; object-too-large: over the object size limit etcd would refuse; expression-too-large: a bucket of addresses over the expression budget, or more shard tags than the rules merge; for these two the largest mapping that fits is written, see edge_registrar_telemetry_unmapped_vps); all 0 when the whole fleet is written.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    unmapped: new Gauge({
      name: 'edge_registrar_telemetry_unmapped_vps',
      help: 'Registered VPSs left out of the Telemetry because the whole fleet would pass a limit (the newest registrations; their requests are tagged unregistered); 0 when the whole fleet is mapped.',
      registers: [registry],
    }),
    lastApplied: new Gauge({ name: 'edge_registrar_telemetry_last_sync_timestamp_seconds', help: 'When the Telemetry was last confirmed in step with the fleet (applied or found unchanged).', registers: [registry] }),
    sourceIdentity: new Gauge({
      name: 'edge_registrar_telemetry_source_identity',
      help: "1 for the state of the source identity overrides (Kiali's per-VPS picture) in the last render: off (not asked for), on, or refused (the fleet too large for one expression per tag).",
      labelNames: ['state'],
      registers: [registry],
    }),
  };
}

/**
 * The `event` label of edge_registrar_sync_events_total: the known event types, `unknown` when
 * the field is missing, `other` for anything else. A label value per garbage event type would
 * be a series that lives for good.
 */
export function eventTypeLabel(event: string | undefined): 'register' | 'retire' | 'unknown' | 'other' {
  return event === 'register' || event === 'retire' ? event : event === undefined ? 'unknown' : 'other';
}
