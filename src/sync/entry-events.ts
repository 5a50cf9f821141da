/**
 * What the sync daemon tells a kubectl user, as Kubernetes Events on the WorkloadEntries it
 * manages (and on its Lease when the leader changes): `kubectl describe workloadentry NAME`
 * shows why an entry was written, repaired or refused, with the stream id of the event behind
 * it. Pure: each function builds one occurrence; the recorder (kube/event-recorder.ts)
 * decides whether it is written.
 */
import { WORKLOAD_ENTRY_GROUP } from '../kube/client.ts';
import type { ObjectReference, Occurrence } from '../kube/event-correlator.ts';

/** Where occurrences go; the recorder, or nothing when Events are off. */
export interface EventSink {
  record(occurrence: Occurrence): void;
}

export const REPORTING_CONTROLLER = 'edge-registrar.io/sync';

export function entryReference(namespace: string, name: string, istioApiVersion: string, uid?: string): ObjectReference {
  return { apiVersion: `${WORKLOAD_ENTRY_GROUP}/${istioApiVersion}`, kind: 'WorkloadEntry', namespace, name, ...(uid !== undefined && uid !== '' ? { uid } : {}) };
}

export function leaseReference(namespace: string, name: string, uid?: string): ObjectReference {
  return { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace, name, ...(uid !== undefined && uid !== '' ? { uid } : {}) };
}

export const entryEvents = {
  applied(entry: ObjectReference, streamId: string, detail: { vpsId: string; address: string; country: string }): Occurrence {
    return { regarding: entry, type: 'Normal', reason: 'Applied', action: 'Apply', note: `register of VPS ${detail.vpsId} from stream id ${streamId} applied: address ${detail.address}, country ${detail.country}` };
  },
  retired(entry: ObjectReference, streamId: string, vpsId: string): Occurrence {
    return { regarding: entry, type: 'Normal', reason: 'Retired', action: 'Delete', note: `retire of VPS ${vpsId} from stream id ${streamId}: entry removed` };
  },
  renamed(entry: ObjectReference, streamId: string, vpsId: string, newName: string): Occurrence {
    return { regarding: entry, type: 'Normal', reason: 'Renamed', action: 'Delete', note: `register of VPS ${vpsId} from stream id ${streamId} renamed it to ${newName}: this entry removed` };
  },
  /** `rules`: the edge-registrar rules the webhook named (webhook.denied when it named none). */
  refused(entry: ObjectReference, streamId: string, rules: readonly string[], message: string): Occurrence {
    return { regarding: entry, type: 'Warning', reason: 'WriteRefused', action: 'Apply', note: `event ${streamId} not applied, rule ${rules.join(', ')}: ${message}; the event is dead-lettered` };
  },
  driftRepaired(entry: ObjectReference, streamId: string, drift: 'missing' | 'changed'): Occurrence {
    const what = drift === 'missing' ? 'the entry was missing' : 'the entry had been changed';
    return { regarding: entry, type: 'Normal', reason: 'DriftRepaired', action: 'Repair', note: `${what}; restored to the state of stream id ${streamId}` };
  },
  repairRefused(entry: ObjectReference, streamId: string, rule: string, message: string): Occurrence {
    return { regarding: entry, type: 'Warning', reason: 'RepairRefused', action: 'Repair', note: `restoring the state of stream id ${streamId} was refused, rule ${rule}: ${message}; entry left as is` };
  },
  orphanRemoved(entry: ObjectReference, orphanForMs: number): Occurrence {
    return { regarding: entry, type: 'Normal', reason: 'OrphanRemoved', action: 'Delete', note: `no registered VPS has this entry (for ${Math.round(orphanForMs / 1000)} s, past the grace period): removed` };
  },
  tombstonedRemoved(entry: ObjectReference, retiredBy: string): Occurrence {
    return { regarding: entry, type: 'Normal', reason: 'TombstonedRemoved', action: 'Delete', note: `its VPS was retired by stream id ${retiredBy}, after the event that wrote this entry: removed` };
  },
  leaderElected(lease: ObjectReference, identity: string, transitions: number): Occurrence {
    return { regarding: lease, type: 'Normal', reason: 'LeaderElection', action: 'Acquire', note: `${identity} became the leader (lease transitions ${transitions}) and applies the stream's events` };
  },
};
