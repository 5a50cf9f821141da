/**
 * What orders work in the daemon: events about one VPS apply in stream order, and so do events
 * claiming one name or one address (two VPSs racing for an address are decided by the stream,
 * never by timing). The resync orders its repairs by the same keys.
 */
import { canonicalAddress } from '../policy/address.ts';

export function orderingKeys(subject: { vpsId: string; name?: string | undefined; address?: string | undefined }): string[] {
  const keys = [`vps:${subject.vpsId}`];
  if (subject.name !== undefined && subject.name !== '') keys.push(`name:${subject.name}`);
  if (subject.address !== undefined && subject.address !== '') keys.push(`address:${canonicalAddress(subject.address) ?? subject.address}`);
  return keys;
}
