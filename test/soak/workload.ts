/**
 * The soak's workload and its model, pure: sigma-api's side of the stream. The model is the
 * fleet as the events published so far define it (who holds which name and address), and
 * each planned event says what it must do: be applied, change nothing, or be dead-lettered.
 * Valid events are only ever planned against the model's state at their position in the
 * stream, so a claim of a value is valid exactly when the model has it free there; that is
 * what makes handoffs (a value freed by one event and claimed by the next) valid.
 */
import { canonicalAddress } from '../../src/policy/address.ts';
import type { Random } from './random.ts';

/** What the daemon must do with an event. */
export type Expectation = 'applied' | 'noop' | 'dead-letter';

export const VALID_KINDS = [
  'register',
  'move',
  'rename',
  'retire',
  'repeat',
  'revive',
  'retire-again',
  'handoff-address-retire',
  'handoff-address-move',
  'handoff-name',
] as const;

export const INVALID_KINDS = [
  'missing-vps-id',
  'unknown-type',
  'bad-name',
  'labels-not-json',
  'binary',
  'huge-value',
  'private-address',
  'country-mismatch',
  'unknown-country',
  'existing-to-private',
] as const;

export type ValidKind = (typeof VALID_KINDS)[number];
export type InvalidKind = (typeof INVALID_KINDS)[number];
/** 'claim' is the second half of a handoff: a new VPS taking the value just freed. */
export type EventKind = ValidKind | InvalidKind | 'claim';

export interface PlannedEvent {
  kind: EventKind;
  fields: (string | Buffer)[];
  expect: Expectation;
  vpsId?: string;
  /** Set once published: the event's id in the stream. */
  streamId?: string;
}

/** A WorkloadEntry the model says must exist once everything is applied. */
export interface ExpectedEntry {
  name: string;
  vpsId: string;
  address: string;
  country: string;
  /** The register event whose state this is; its stream id is the entry's stream-id. */
  source: PlannedEvent;
}

interface LiveVps {
  vpsId: string;
  name: string;
  address: string;
  country: string;
  source: PlannedEvent;
}

const COUNTRIES = ['jp', 'us', 'de', 'sg', 'hk', 'nl'] as const;

function flat(record: Record<string, string>): string[] {
  return Object.entries(record).flat();
}

export interface WorkloadOptions {
  /** The fleet size the workload hovers around. */
  fleet: number;
  /** Share of actions that are invalid events. */
  invalidShare?: number;
}

export class Workload {
  readonly #random: Random;
  readonly #options: Required<WorkloadOptions>;
  readonly #live = new Map<string, LiveVps>();
  readonly #retired: string[] = [];
  readonly #nameHolder = new Map<string, string>();
  readonly #addressHolder = new Map<string, string>();
  /** Addresses once held and free now: reused later, as a provider recycles IPs. */
  readonly #freedAddresses: string[] = [];
  #nextVps = 1;
  #nextName = 1;
  #nextAddress = 1;

  constructor(random: Random, options: WorkloadOptions) {
    this.#random = random;
    this.#options = { invalidShare: 0.06, ...options };
  }

  get fleetSize(): number {
    return this.#live.size;
  }

  /** The entries the cluster must hold once every event so far is applied, by name. */
  expectedEntries(): Map<string, ExpectedEntry> {
    return new Map([...this.#live.values()].map((v) => [v.name, { name: v.name, vpsId: v.vpsId, address: v.address, country: v.country, source: v.source }]));
  }

  /** One action: one event, or the two of a handoff, in stream order. */
  next(): PlannedEvent[] {
    if (this.#random.chance(this.#options.invalidShare)) return [this.invalid(this.#random.pick(INVALID_KINDS))];
    const fill = this.#live.size < this.#options.fleet;
    const kind = this.#live.size === 0 ? 'register' : this.#random.weighted<ValidKind>({
      register: fill ? 40 : 6,
      move: 12,
      rename: 6,
      retire: fill ? 4 : 14,
      repeat: 4,
      revive: this.#retired.length > 0 ? 3 : 0,
      'retire-again': this.#retired.length > 0 ? 2 : 0,
      'handoff-address-retire': 5,
      'handoff-address-move': 5,
      'handoff-name': 5,
    });
    return this.valid(kind);
  }

  /**
   * A burst: a provider's bulk order (new VPSs and moves) while the fleet is below its size,
   * a bulk renumbering and decommissioning (moves and retires) once it is above.
   */
  burst(size: number): PlannedEvent[] {
    const growing = this.#live.size < this.#options.fleet;
    return Array.from({ length: size }, () => {
      if (this.#live.size === 0) return this.valid('register');
      if (growing) return this.valid(this.#random.chance(0.3) ? 'move' : 'register');
      return this.valid(this.#random.chance(0.4) ? 'retire' : 'move');
    }).flat();
  }

  valid(kind: ValidKind): PlannedEvent[] {
    const someone = (): LiveVps | undefined => (this.#live.size === 0 ? undefined : this.#random.pick([...this.#live.values()]));
    const target = someone();
    switch (kind) {
      case 'register':
        return [this.#register('register', this.#newVpsId(), this.#newName(this.#country()), this.#newAddress())];
      case 'move':
        return target === undefined ? this.valid('register') : [this.#register('move', target.vpsId, target.name, this.#newAddress(), target.country)];
      case 'rename': {
        if (target === undefined) return this.valid('register');
        const country = this.#random.chance(0.2) ? this.#country() : target.country;
        return [this.#register('rename', target.vpsId, this.#newName(country), target.address, country)];
      }
      case 'retire':
        return target === undefined ? this.valid('register') : [this.#retire('retire', target.vpsId)];
      case 'repeat':
        return target === undefined ? this.valid('register') : [this.#register('repeat', target.vpsId, target.name, target.address, target.country)];
      case 'revive': {
        const vpsId = this.#retired.length > 0 ? this.#retired.splice(this.#random.int(0, this.#retired.length - 1), 1)[0] : undefined;
        return vpsId === undefined ? this.valid('register') : [this.#register('revive', vpsId, this.#newName(this.#country()), this.#newAddress())];
      }
      case 'retire-again': {
        const vpsId = this.#retired.length > 0 ? this.#random.pick(this.#retired) : `never-${this.#nextVps++}`;
        return [{ kind, fields: flat({ event: 'retire', vps_id: vpsId }), expect: 'noop', vpsId }];
      }
      case 'handoff-address-retire': {
        if (target === undefined) return this.valid('register');
        const retire = this.#retire(kind, target.vpsId);
        return [retire, this.#register('claim', this.#newVpsId(), this.#newName(this.#country()), this.#takeFreed(target.address))];
      }
      case 'handoff-address-move': {
        if (target === undefined) return this.valid('register');
        const old = target.address;
        const move = this.#register(kind, target.vpsId, target.name, this.#newAddress(), target.country);
        return [move, this.#register('claim', this.#newVpsId(), this.#newName(this.#country()), this.#takeFreed(old))];
      }
      case 'handoff-name': {
        if (target === undefined) return this.valid('register');
        const old = target.name;
        const rename = this.#register(kind, target.vpsId, this.#newName(target.country), target.address, target.country);
        return [rename, this.#register('claim', this.#newVpsId(), old, this.#newAddress(), target.country)];
      }
    }
  }

  /** An event that must be dead-lettered and change nothing. */
  invalid(kind: InvalidKind): PlannedEvent {
    const country = this.#country();
    const fresh = { event: 'register', vps_id: `bad-${this.#nextVps++}`, name: `vps-${country}-${this.#nextName++}`, address: '45.77.1.1', country };
    const planned = (fields: (string | Buffer)[]): PlannedEvent => ({ kind, fields, expect: 'dead-letter' });
    switch (kind) {
      case 'missing-vps-id':
        return planned(flat({ event: 'register', name: fresh.name, address: fresh.address, country }));
      case 'unknown-type':
        return planned(flat({ ...fresh, event: 'decommission' }));
      case 'bad-name':
        return planned(flat({ ...fresh, name: 'VPS_JP.01!' }));
      case 'labels-not-json':
        return planned(flat({ ...fresh, labels: '{"provider": vultr' }));
      case 'binary': {
        const bytes = Buffer.from(Array.from({ length: 64 }, () => this.#random.int(0, 255)));
        return planned(['event', bytes, 'vps_id', bytes, 'name', bytes]);
      }
      case 'huge-value':
        return planned(flat({ ...fresh, address: '9'.repeat(64 * 1024) }));
      case 'private-address':
        return planned(flat({ ...fresh, address: `10.${this.#random.int(0, 255)}.${this.#random.int(0, 255)}.${this.#random.int(1, 254)}` }));
      case 'country-mismatch':
        return planned(flat({ ...fresh, name: `vps-${country === 'jp' ? 'us' : 'jp'}-${this.#nextName++}` }));
      case 'unknown-country':
        return planned(flat({ ...fresh, name: `vps-zz-${this.#nextName++}`, country: 'zz' }));
      case 'existing-to-private': {
        const target = this.#live.size === 0 ? undefined : this.#random.pick([...this.#live.values()]);
        if (target === undefined) return planned(flat({ ...fresh, address: '192.168.7.7' }));
        return { ...planned(flat({ event: 'register', vps_id: target.vpsId, name: target.name, address: `192.168.${this.#random.int(0, 255)}.${this.#random.int(1, 254)}`, country: target.country })), vpsId: target.vpsId };
      }
    }
  }

  #country(): string {
    return this.#random.pick(COUNTRIES);
  }

  #newVpsId(): string {
    return `v${this.#nextVps++}`;
  }

  #newName(country: string): string {
    return `vps-${country}-${this.#nextName++}`;
  }

  /** A never-used address, or one freed earlier (a provider recycles IPs); one in ten IPv6. */
  #newAddress(): string {
    if (this.#freedAddresses.length > 20 && this.#random.chance(0.3)) return this.#takeFreed(this.#freedAddresses[0] as string);
    const n = this.#nextAddress++;
    const raw = this.#random.chance(0.1) ? `2001:19f0:${(n >> 16).toString(16)}:${(n & 0xffff).toString(16)}::1` : `45.76.${(n >> 8) & 255}.${n & 255}`;
    return canonicalAddress(raw) ?? raw;
  }

  #takeFreed(address: string): string {
    const i = this.#freedAddresses.indexOf(address);
    if (i >= 0) this.#freedAddresses.splice(i, 1);
    return address;
  }

  #register(kind: EventKind, vpsId: string, name: string, address: string, country = /^vps-([a-z]{2})-/.exec(name)?.[1] ?? 'jp'): PlannedEvent {
    const holderOfName = this.#nameHolder.get(name);
    const holderOfAddress = this.#addressHolder.get(address);
    if ((holderOfName !== undefined && holderOfName !== vpsId) || (holderOfAddress !== undefined && holderOfAddress !== vpsId)) {
      throw new Error(`workload bug: ${kind} of ${vpsId} claims ${name}/${address} held by ${holderOfName ?? holderOfAddress ?? ''}`);
    }
    const event: PlannedEvent = { kind, fields: flat({ event: 'register', vps_id: vpsId, name, address, country }), expect: 'applied', vpsId };
    const previous = this.#live.get(vpsId);
    if (previous !== undefined) this.#release(previous, { name: previous.name !== name, address: previous.address !== address });
    this.#live.set(vpsId, { vpsId, name, address, country, source: event });
    this.#nameHolder.set(name, vpsId);
    this.#addressHolder.set(address, vpsId);
    return event;
  }

  #retire(kind: EventKind, vpsId: string): PlannedEvent {
    const previous = this.#live.get(vpsId);
    if (previous !== undefined) {
      this.#release(previous, { name: true, address: true });
      this.#live.delete(vpsId);
      this.#retired.push(vpsId);
    }
    return { kind, fields: flat({ event: 'retire', vps_id: vpsId }), expect: previous === undefined ? 'noop' : 'applied', vpsId };
  }

  #release(vps: LiveVps, what: { name: boolean; address: boolean }): void {
    if (what.name) this.#nameHolder.delete(vps.name);
    if (what.address) {
      this.#addressHolder.delete(vps.address);
      this.#freedAddresses.push(vps.address);
    }
  }
}
