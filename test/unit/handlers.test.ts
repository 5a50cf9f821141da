import jsonPatch from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import { applyDefaults } from '../../src/policy/mutate.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import type { AdmissionResponse } from '../../src/webhook/admission.ts';
import { handleMutate, handleValidate, type HandlerContext } from '../../src/webhook/handlers.ts';
import { NAMESPACE, USERS, admissionRequest, completeEntry, defaultedSpecLabels, sampleEntry } from '../fixtures/entries.ts';

function context(setup: (index: ClusterIndex) => void = () => undefined, now?: () => number): HandlerContext {
  const index = new ClusterIndex(NAMESPACE, now === undefined ? {} : { now });
  index.replace('WorkloadEntry', NAMESPACE, []);
  index.replace('Service', NAMESPACE, []);
  index.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm' } }]);
  setup(index);
  return { policy: DEFAULT_POLICY, namespace: NAMESPACE, view: index, now: () => new Date('2026-11-21T00:00:00Z') };
}

function patched(original: unknown, response: AdmissionResponse): unknown {
  if (response.patch === undefined) return original;
  const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as jsonPatch.Operation[];
  return jsonPatch.applyPatch(structuredClone(original), ops, true, false).newDocument;
}

describe('mutation', () => {
  it('makes the sample entry complete, and the patch applied gives exactly that', () => {
    const entry = sampleEntry();
    const { response, decision } = handleMutate(admissionRequest('CREATE', entry), context());
    expect(decision).toBe('patched');
    expect(response.patchType).toBe('JSONPatch');
    expect(patched(entry, response)).toEqual(completeEntry());
  });

  it('fills serviceAccount, mirrors metadata labels, canonicalises the address', () => {
    const entry = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-07', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp' } },
      spec: { address: '2606:4700:0:0:0:0:0:1111' },
    };
    const result = patched(entry, handleMutate(admissionRequest('CREATE', entry), context()).response) as { spec: Record<string, unknown> };
    expect(result.spec).toEqual({
      address: '2606:4700::1111',
      serviceAccount: 'xrayr-vm',
      labels: defaultedSpecLabels(),
    });
  });

  it('sends no patch when the entry is already right', () => {
    const { response, decision } = handleMutate(admissionRequest('CREATE', completeEntry()), context());
    expect(decision).toBe('allowed');
    expect(response.patch).toBeUndefined();
    expect(response.allowed).toBe(true);
  });

  it('leaves values the user set, even wrong ones, for validation to report', () => {
    const entry = completeEntry() as { spec: Record<string, any> };
    entry.spec.serviceAccount = 'default';
    entry.spec.labels['security.istio.io/tlsMode'] = 'istio';
    expect(handleMutate(admissionRequest('CREATE', entry), context()).response.patch).toBeUndefined();
  });

  it('never mutates on DELETE', () => {
    const { response, decision } = handleMutate(admissionRequest('DELETE', undefined, { oldObject: sampleEntry() }), context());
    expect(decision).toBe('ignored');
    expect(response).toEqual({ uid: expect.any(String), allowed: true });
  });

  it('leaves malformed objects alone instead of crashing', () => {
    for (const object of [null, 42, 'x', [], { spec: 'nope' }, { spec: { labels: 'nope' } }]) {
      expect(handleMutate(admissionRequest('CREATE', object), context()).response.allowed).toBe(true);
    }
  });

  it('is idempotent: defaulting a defaulted entry changes nothing', () => {
    const once = applyDefaults(sampleEntry(), DEFAULT_POLICY);
    expect(applyDefaults(once, DEFAULT_POLICY)).toEqual(once);
  });

  it('escapes label keys with "/" in the patch paths', () => {
    const entry = sampleEntry();
    const ops = JSON.parse(Buffer.from(handleMutate(admissionRequest('CREATE', entry), context()).response.patch ?? '', 'base64').toString()) as { path: string }[];
    expect(ops.map((o) => o.path)).toContain('/spec/labels/security.istio.io~1tlsMode');
  });
});

describe('validation', () => {
  it('allows a complete entry and echoes the uid', () => {
    const request = admissionRequest('CREATE', completeEntry());
    const { response } = handleValidate(request, context());
    expect(response).toEqual({ uid: request.uid, allowed: true });
  });

  it('denies with 422 and every violation in the message', () => {
    const entry = completeEntry() as { spec: Record<string, any> };
    entry.spec.address = '10.0.0.5';
    entry.spec.serviceAccount = 'default';
    const { response, decision } = handleValidate(admissionRequest('CREATE', entry), context());
    expect(decision).toBe('denied');
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(422);
    expect(response.status?.reason).toBe('Invalid');
    expect(response.status?.message).toContain('WorkloadEntry airport-prod/vps-jp-01 violates 2 edge-registrar rules');
    expect(response.status?.message).toContain('[address.public-unicast] spec.address: "10.0.0.5" is in the private (RFC 1918) range 10.0.0.0/8');
    expect(response.status?.message).toContain('[serviceAccount.value] spec.serviceAccount: "default"');
  });

  it('returns soft findings as warnings', () => {
    const entry = completeEntry() as { spec: Record<string, any> };
    delete entry.spec.labels.version;
    const { response } = handleValidate(admissionRequest('CREATE', entry), context());
    expect(response.allowed).toBe(true);
    expect(response.warnings?.join('\n')).toMatch(/no version label/);
  });

  it('dryRun changes nothing in the answer (the webhook has no side effects)', () => {
    const entry = completeEntry();
    const wet = handleValidate(admissionRequest('CREATE', entry), context()).response;
    const dry = handleValidate(admissionRequest('CREATE', entry, { dryRun: true }), context()).response;
    expect({ ...dry, uid: '' }).toEqual({ ...wet, uid: '' });
  });

  it('ratchets: on UPDATE, a violation the old object already had is a warning, a new one is denied', () => {
    const ctx = context((i) => i.upsert('WorkloadEntry', { metadata: { name: 'vps-jp-09' }, spec: { address: '103.21.244.10' } }));
    // Both entries share an address from before edge-registrar existed; relabelling one must not be blocked.
    const old = completeEntry();
    const updated = completeEntry() as { metadata: { annotations?: Record<string, string> }; spec: Record<string, any> };
    updated.metadata.annotations = { note: 'hello' };
    const allowed = handleValidate(admissionRequest('UPDATE', updated, { oldObject: old }), ctx);
    expect(allowed.response.allowed).toBe(true);
    expect(allowed.response.warnings?.join('\n')).toContain('existing violation left as is: [address.unique]');
    updated.spec.weight = 0;
    const denied = handleValidate(admissionRequest('UPDATE', updated, { oldObject: old }), ctx);
    expect(denied.violations.map((v) => v.rule)).toEqual(['weight.zero']);
  });

  /** An entry being deleted, held by `finalizers`, as the API server stores it. */
  const terminating = (finalizers: string[], change: (entry: { metadata: Record<string, any>; spec: Record<string, any> }) => void = () => undefined): unknown => {
    const entry = completeEntry() as { metadata: Record<string, any>; spec: Record<string, any> };
    entry.metadata.deletionTimestamp = '2026-11-21T00:00:00Z';
    entry.metadata.deletionGracePeriodSeconds = 0;
    entry.metadata.finalizers = finalizers;
    entry.metadata.resourceVersion = String(100 + finalizers.length);
    change(entry);
    return entry;
  };

  it('allows removing finalizers from an entry being deleted, even one that breaks the rules', () => {
    const broken = (entry: { spec: Record<string, any> }): void => { entry.spec.address = '10.0.0.1'; };
    const request = admissionRequest('UPDATE', terminating([], broken), { oldObject: terminating(['example.com/hold'], broken) });
    expect(handleValidate(request, context()).response.allowed).toBe(true);
    expect(handleMutate(request, context()).decision).toBe('ignored');
  });

  it('judges any other update of an entry being deleted by every rule (no way around the guard)', () => {
    const held = terminating(['example.com/hold']);
    const changed = terminating(['example.com/hold'], (entry) => {
      entry.spec.address = '10.0.0.5';
      entry.spec.labels['security.istio.io/tlsMode'] = 'istio';
    });
    const { response, violations } = handleValidate(admissionRequest('UPDATE', changed, { oldObject: held }), context());
    expect(response.allowed).toBe(false);
    expect(violations.map((v) => v.rule).sort()).toEqual(['address.public-unicast', 'labels.tls-mode']);
    // Taking a finalizer off in the same update does not make the change a finalizer removal.
    const alsoUnheld = terminating([], (entry) => { entry.spec.address = '10.0.0.5'; });
    expect(handleValidate(admissionRequest('UPDATE', alsoUnheld, { oldObject: held }), context()).response.allowed).toBe(false);
  });

  it('ignores other kinds, subresources and namespaces', () => {
    const bad = { spec: { address: '10.0.0.1' } };
    const other = { ...admissionRequest('CREATE', bad), kind: { group: '', version: 'v1', kind: 'ConfigMap' } };
    expect(handleValidate(other, context()).decision).toBe('ignored');
    expect(handleValidate({ ...admissionRequest('UPDATE', bad), subResource: 'status' }, context()).decision).toBe('ignored');
    expect(handleValidate(admissionRequest('CREATE', bad, { namespace: 'elsewhere' }), context()).decision).toBe('ignored');
  });
});

describe('ownership', () => {
  const managed = completeEntry({ managed: true });

  /** The managed entry created, changed (to itself) or deleted by `user`. */
  const writeOfManaged = (operation: 'CREATE' | 'UPDATE' | 'DELETE', user: (typeof USERS)[keyof typeof USERS]) =>
    operation === 'DELETE'
      ? admissionRequest('DELETE', undefined, { oldObject: managed, user })
      : admissionRequest(operation, managed, { oldObject: operation === 'UPDATE' ? managed : undefined, user });

  it.each(['CREATE', 'UPDATE', 'DELETE'] as const)('a plain user cannot %s a managed entry, and is told how', (operation) => {
    const { response } = handleValidate(writeOfManaged(operation, USERS.alice), context());
    expect(response.allowed).toBe(false);
    expect(response.status?.code).toBe(403);
    expect(response.status?.message).toContain('[ownership.managed]');
    expect(response.status?.message).toContain('publish a register or retire event');
    // The VPS whose event would make the change, named from the entry's own annotation.
    expect(response.status?.message).toContain('publish a register or retire event for VPS 1001 (its edge-registrar.io/vps-id annotation)');
  });

  it('a plain user cannot take an entry over by removing the marker', () => {
    const { response } = handleValidate(admissionRequest('UPDATE', completeEntry(), { oldObject: managed, user: USERS.alice }), context());
    expect(response.status?.message).toContain('would remove the app.kubernetes.io/managed-by=edge-registrar label');
  });

  it.each(['CREATE', 'UPDATE', 'DELETE'] as const)('the sync daemon may %s', (operation) => {
    const request = writeOfManaged(operation, USERS.sync);
    const { response } = handleValidate(request, context());
    expect(response).toEqual({ uid: request.uid, allowed: true });
  });

  it("the sync daemon may not move an entry back to an older event's state (a deposed leader's late write)", () => {
    const at = (streamId: string | undefined): unknown => {
      const entry = completeEntry({ managed: true }) as { metadata: { annotations?: Record<string, string> } };
      entry.metadata.annotations = { 'edge-registrar.io/vps-id': 'v1', ...(streamId === undefined ? {} : { 'edge-registrar.io/stream-id': streamId }) };
      return entry;
    };
    const update = (next: string | undefined, previous: string | undefined): AdmissionResponse =>
      handleValidate(admissionRequest('UPDATE', at(next), { oldObject: at(previous), user: USERS.sync }), context()).response;
    const older = update('1700000000000-9', '1700000000001-0');
    expect(older.allowed).toBe(false);
    expect(older.status?.code).toBe(403);
    expect(older.status?.message).toContain('[ownership.stream-order] metadata.annotations["edge-registrar.io/stream-id"]: "1700000000000-9" is older than the event 1700000000001-0');
    // Same event (a resync re-applying), newer events, and entries without a usable id pass.
    for (const [next, previous] of [['1700000000001-0', '1700000000001-0'], ['1700000000001-1', '1700000000001-0'], ['1700000000000-0', undefined], ['1700000000000-0', 'garbage']]) {
      expect(update(next, previous).allowed).toBe(true);
    }
    // The mutating webhook leaves the refused write alone for the validating one to explain.
    expect(handleMutate(admissionRequest('UPDATE', at('1-0'), { oldObject: at('2-0'), user: USERS.sync }), context()).decision).toBe('ignored');
  });

  it('break-glass is allowed, warned, audited, and annotated on the object', () => {
    const request = admissionRequest('UPDATE', managed, { oldObject: managed, user: USERS.breakGlass });
    const validated = handleValidate(request, context()).response;
    expect(validated.allowed).toBe(true);
    expect(validated.warnings?.[0]).toMatch(/^break-glass: bob may change/);
    expect(validated.auditAnnotations).toEqual({ 'break-glass': expect.stringContaining('UPDATE by bob') });
    const mutated = patched(managed, handleMutate(request, context()).response) as { metadata: { annotations: Record<string, string> } };
    expect(mutated.metadata.annotations['edge-registrar.io/break-glass']).toBe('2026-11-21T00:00:00.000Z UPDATE by bob (groups edge-registrar:break-glass,system:authenticated) via break-glass');
  });

  it('break-glass stamping is idempotent under reinvocation (reinvocationPolicy: IfNeeded), and restamps a stamp carried over from an earlier request', () => {
    const first = handleMutate(admissionRequest('UPDATE', managed, { oldObject: managed, user: USERS.breakGlass }), context());
    const once = patched(managed, first.response);
    // The API server calls the webhook again with the object as the first call left it.
    const later = (): HandlerContext => ({ ...context(), now: () => new Date('2026-11-21T00:00:05.000Z') });
    const again = handleMutate(admissionRequest('UPDATE', once, { oldObject: managed, user: USERS.breakGlass }), later());
    expect([again.decision, again.response.patch]).toEqual(['allowed', undefined]);
    // A new break-glass request on the stamped entry gets a new stamp.
    const next = patched(once, handleMutate(admissionRequest('UPDATE', once, { oldObject: once, user: USERS.breakGlass }), later()).response) as { metadata: { annotations: Record<string, string> } };
    expect(next.metadata.annotations['edge-registrar.io/break-glass']).toMatch(/^2026-11-21T00:00:05.000Z UPDATE by bob/);
    // A stamp written by someone else (another audit text) is replaced, not trusted.
    const forged = structuredClone(managed) as { metadata: { annotations?: Record<string, string> } };
    forged.metadata.annotations = { ...forged.metadata.annotations, 'edge-registrar.io/break-glass': '2020-01-01T00:00:00.000Z UPDATE by nobody via break-glass' };
    const restamped = patched(forged, handleMutate(admissionRequest('UPDATE', forged, { oldObject: managed, user: USERS.breakGlass }), later()).response) as { metadata: { annotations: Record<string, string> } };
    expect(restamped.metadata.annotations['edge-registrar.io/break-glass']).toMatch(/^2026-11-21T00:00:05.000Z UPDATE by bob/);
  });

  it("break-glass may not set or raise the daemon's stream-id annotation (the webhook would refuse every later repair), and says truly what the daemon will do", () => {
    const withStreamId = (id: string) => {
      const entry = structuredClone(managed) as { metadata: { annotations: Record<string, string> } };
      entry.metadata.annotations = { ...entry.metadata.annotations, 'edge-registrar.io/stream-id': id };
      return entry;
    };
    const raised = handleValidate(admissionRequest('UPDATE', withStreamId('9999999999999-0'), { oldObject: withStreamId('1796378400000-0'), user: USERS.breakGlass }), context());
    expect(raised.response.allowed).toBe(false);
    expect(raised.response.status?.code).toBe(403);
    expect(raised.response.status?.message).toContain('[ownership.break-glass] metadata.annotations["edge-registrar.io/stream-id"]: "9999999999999-0" changes the sync daemon\'s record of the event that wrote the entry (1796378400000-0)');
    const created = handleValidate(admissionRequest('CREATE', withStreamId('9999999999999-0'), { user: USERS.breakGlass }), context());
    expect(created.response.status?.message).toContain('[ownership.break-glass]');
    // Left as it is, or removed: allowed, and the warning says what the resync does.
    const kept = handleValidate(admissionRequest('UPDATE', withStreamId('1796378400000-0'), { oldObject: withStreamId('1796378400000-0'), user: USERS.breakGlass }), context());
    expect([kept.response.allowed, kept.response.warnings?.[0]]).toEqual([true, expect.stringContaining('its next resync restores the registered state')]);
    expect(handleValidate(admissionRequest('UPDATE', managed, { oldObject: withStreamId('1796378400000-0'), user: USERS.breakGlass }), context()).response.allowed).toBe(true);
    expect(handleValidate(admissionRequest('DELETE', undefined, { oldObject: managed, user: USERS.breakGlass }), context()).response.warnings?.[0]).toContain('its next resync creates the entry again if its VPS is still registered');
  });

  it('break-glass deletes are allowed with a warning', () => {
    const { response } = handleValidate(admissionRequest('DELETE', undefined, { oldObject: managed, user: USERS.breakGlass }), context());
    expect(response.allowed).toBe(true);
    expect(response.warnings?.[0]).toMatch(/break-glass: bob may delete/);
  });

  it.each([USERS.gc, USERS.alice])("$username may take a finalizer off a managed entry being deleted (the garbage collector after --cascade=foreground)", (user) => {
    const deleting = (finalizers: string[]): unknown => {
      const entry = structuredClone(managed) as { metadata: Record<string, unknown> };
      entry.metadata.deletionTimestamp = '2026-11-21T00:00:00Z';
      entry.metadata.finalizers = finalizers;
      return entry;
    };
    const request = admissionRequest('UPDATE', deleting([]), { oldObject: deleting(['foregroundDeletion']), user });
    expect(handleValidate(request, context()).response).toEqual({ uid: request.uid, allowed: true });
    // Anything more than the finalizer is still a change to a managed entry.
    const relabelled = deleting([]) as { metadata: { labels: Record<string, string> } };
    relabelled.metadata.labels = { ...relabelled.metadata.labels, tier: 'gold' };
    const refused = handleValidate(admissionRequest('UPDATE', relabelled, { oldObject: deleting(['foregroundDeletion']), user }), context()).response;
    expect(refused.status?.message).toContain('[ownership.managed]');
  });

  it.each([USERS.gc, USERS.namespaceController])('%s may always delete', (user) => {
    expect(handleValidate(admissionRequest('DELETE', undefined, { oldObject: managed, user }), context()).response.allowed).toBe(true);
  });

  it('istiod may write its auto-registered entries; others may not borrow the annotation', () => {
    const auto = completeEntry() as { metadata: Record<string, any>; spec: Record<string, any> };
    auto.metadata.annotations = { 'istio.io/autoRegistrationGroup': 'xrayr' };
    auto.spec.address = '10.1.2.3';
    expect(handleValidate(admissionRequest('CREATE', auto, { user: USERS.istiod }), context()).response.allowed).toBe(true);
    expect(handleValidate(admissionRequest('CREATE', auto, { user: USERS.alice }), context()).response.allowed).toBe(false);
  });

  describe("the leader fence: the sync daemon's write must come from the Lease's current term", () => {
    const stamped = (token: string | undefined): unknown => {
      const entry = completeEntry({ managed: true }) as { metadata: { annotations?: Record<string, string> } };
      entry.metadata.annotations = { 'edge-registrar.io/vps-id': 'v1', ...(token === undefined ? {} : { 'edge-registrar.io/leader': token }) };
      return entry;
    };
    /** The namespace with the sync Lease held at `token` (null: no holder; undefined: the Lease not seen yet). */
    const withLease = (token: string | null | undefined, now?: () => number): HandlerContext => ({
      ...context((index) => {
        if (token === undefined) return;
        const [holder = '', transitions = '0', acquired] = (token ?? '@0').split('@');
        index.replace('Lease', NAMESPACE, [{ metadata: { name: 'edge-registrar-sync' }, spec: { holderIdentity: holder, leaseTransitions: Number(transitions), leaseDurationSeconds: 15, ...(acquired === undefined ? {} : { acquireTime: new Date(Number(acquired)).toISOString() }) } }]);
      }, now),
      syncLeaseName: 'edge-registrar-sync',
    });
    it.each<[string, string | undefined, string | null | undefined, 'CREATE' | 'UPDATE', boolean | 409]>([
      ['the holder creates', 'sync-b@4', 'sync-b@4', 'CREATE', true],
      ['a deposed leader creates (a late write)', 'sync-a@3', 'sync-b@4', 'CREATE', 409],
      ['a deposed leader updates', 'sync-a@3', 'sync-b@4', 'UPDATE', 409],
      ['the same holder after losing the Lease and taking it back (a new term)', 'sync-a@3', 'sync-a@5', 'CREATE', 409],
      ['the holder of this acquisition', 'sync-a@3@1796695811123', 'sync-a@3@1796695811123', 'CREATE', true],
      ['the same holder, same transitions, an earlier acquisition (it lapsed and took the Lease back)', 'sync-a@3@1796695811123', 'sync-a@3@1796695899000', 'CREATE', 409],
      ['no one holds the Lease', 'sync-a@3', null, 'CREATE', 409],
      ['the webhook has not seen the Lease yet', 'sync-a@3', undefined, 'CREATE', 409],
      ['a daemon from before the fence (no token)', undefined, 'sync-b@4', 'CREATE', true],
    ])('%s', (_name, token, lease, operation, expected) => {
      const request = admissionRequest(operation, stamped(token), { oldObject: operation === 'UPDATE' ? stamped('sync-b@4') : undefined, user: USERS.sync });
      const { response } = handleValidate(request, withLease(lease));
      if (expected === true) expect(response.allowed).toBe(true);
      else {
        expect(response.allowed).toBe(false);
        // 409: the daemon retries it, finds its term over and leaves the event to the new leader.
        expect(response.status?.code).toBe(409);
        expect(response.status?.message).toContain('[ownership.leader] metadata.annotations["edge-registrar.io/leader"]');
      }
    });

    it("vouches for no term once the Lease has gone unseen longer than its duration (a broken watch), and again once it is seen", () => {
      let now = 0;
      const ctx = withLease('sync-b@4@1796695811123', () => now);
      const request = admissionRequest('CREATE', stamped('sync-b@4@1796695811123'), { user: USERS.sync });
      now = 15_000;
      expect(handleValidate(request, ctx).response.allowed).toBe(true);
      now = 16_500;
      const { response } = handleValidate(request, ctx);
      expect(response.allowed).toBe(false);
      expect(response.status?.code).toBe(409);
      expect(response.status?.message).toContain('"sync-b@4@1796695811123" cannot be checked: the webhook has not seen the sync Lease change for 16.5 s, longer than its duration (15 s)');
      // The watch delivers the holder's renewal: fresh again.
      (ctx.view as ClusterIndex).upsert('Lease', { metadata: { name: 'edge-registrar-sync', namespace: NAMESPACE }, spec: { holderIdentity: 'sync-b', leaseTransitions: 4, leaseDurationSeconds: 15, acquireTime: new Date(1796695811123).toISOString() } });
      expect(handleValidate(request, ctx).response.allowed).toBe(true);
    });

    it('does not judge deletes (they carry the resourceVersion read as a precondition)', () => {
      const request = admissionRequest('DELETE', undefined, { oldObject: stamped('sync-a@3'), user: USERS.sync });
      expect(handleValidate(request, withLease('sync-b@4')).response.allowed).toBe(true);
    });
  });

  it('a plain user may write unmanaged entries that pass the rules', () => {
    expect(handleValidate(admissionRequest('CREATE', completeEntry(), { user: USERS.alice }), context()).response.allowed).toBe(true);
  });
});
