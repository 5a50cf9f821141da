import { describe, expect, it } from 'vitest';
import { BodyBudget, SMALL_REVIEW_BYTES, bodyBudgetFor } from '../../src/webhook/body-budget.ts';

const MiB = 1024 * 1024;

describe('the body budget', () => {
  it('is an eighth of the memory limit, 64 MiB when none is known, or what is given', () => {
    expect(bodyBudgetFor(320 * MiB)).toEqual({ totalBytes: 40 * MiB, smallRequestBytes: SMALL_REVIEW_BYTES, reservedForSmallBytes: 5 * MiB, perPeerBytes: 10 * MiB, reservedForTrustedBytes: 10 * MiB });
    expect(bodyBudgetFor(0).totalBytes).toBe(64 * MiB);
    expect(bodyBudgetFor(320 * MiB, 8 * MiB)).toEqual({ totalBytes: 8 * MiB, smallRequestBytes: SMALL_REVIEW_BYTES, reservedForSmallBytes: 1 * MiB, perPeerBytes: 2 * MiB, reservedForTrustedBytes: 2 * MiB });
  });

  it('sheds large bodies before they reach the part kept for small ones, and small ones only when full', () => {
    const budget = new BodyBudget({ totalBytes: 10 * MiB, smallRequestBytes: 64 * 1024, reservedForSmallBytes: 2 * MiB });
    const large = [budget.tryReserve(3 * MiB), budget.tryReserve(3 * MiB)];
    expect(large.every((r) => r !== undefined)).toBe(true);
    // 6 MiB held; a third 3 MiB body would pass the 8 MiB large requests may use.
    expect(budget.tryReserve(3 * MiB)).toBeUndefined();
    expect(budget.tryReserve(2 * MiB)).toBeDefined();
    // Large ones are full at 8 MiB; small ones still fit in the 2 MiB kept for them.
    expect(budget.tryReserve(100 * 1024)).toBeUndefined();
    const small = Array.from({ length: 32 }, () => budget.tryReserve(64 * 1024));
    expect(small.every((r) => r !== undefined)).toBe(true);
    expect(budget.inUseBytes).toBe(10 * MiB);
    expect(budget.tryReserve(1)).toBeUndefined();
    // Released (twice is once), the room comes back.
    large[0]?.release();
    large[0]?.release();
    expect(budget.inUseBytes).toBe(7 * MiB);
    expect(budget.tryReserve(1 * MiB)).toBeDefined();
  });
});

describe('a body sent without Content-Length', () => {
  it('reserves as it arrives, and is shed once it outgrows what large bodies may use', () => {
    const budget = new BodyBudget({ totalBytes: 1024, smallRequestBytes: 100, reservedForSmallBytes: 200 });
    const chunked = budget.tryReserve(0);
    expect(chunked?.growTo(100)).toBe(true);
    expect(chunked?.growTo(800)).toBe(true);
    expect(chunked?.growTo(825)).toBe(false);
    expect(budget.inUseBytes).toBe(800);
    chunked?.release();
    expect(budget.inUseBytes).toBe(0);
  });
});

describe('what one peer holds', () => {
  it('is capped at its share, whatever the whole budget has left; other peers are not affected', () => {
    const budget = new BodyBudget({ totalBytes: 1000, smallRequestBytes: 100, reservedForSmallBytes: 100, perPeerBytes: 300 });
    const a = budget.tryReserve(0, { peer: 'a', announcedBytes: 50 });
    expect(a?.growTo(50)).toBe(true);
    const a2 = budget.tryReserve(0, { peer: 'a', announcedBytes: 400 });
    expect(a2?.growTo(250)).toBe(true);
    // 300 held by a: one byte more is over its share.
    expect(a2?.growTo(251)).toBe(false);
    expect(budget.tryReserve(1, { peer: 'a' })).toBeUndefined();
    expect(budget.tryReserve(200, { peer: 'b' })).toBeDefined();
    expect(budget.heldBy('a')).toBe(300);
    a?.release();
    expect(budget.heldBy('a')).toBe(250);
  });

  it('classes a request by the size it announced: a large announcement never uses the room kept for small ones', () => {
    const budget = new BodyBudget({ totalBytes: 1000, smallRequestBytes: 100, reservedForSmallBytes: 200 });
    const large = budget.tryReserve(0, { announcedBytes: 5000 });
    expect(large?.growTo(800)).toBe(true);
    expect(large?.growTo(801)).toBe(false);
    expect(budget.tryReserve(0, { announcedBytes: 50 })?.growTo(50)).toBe(true);
  });

  it("keeps a part for trusted peers (the API server): untrusted peers together never reach it, whatever their number", () => {
    const budget = new BodyBudget({ totalBytes: 1000, smallRequestBytes: 100, reservedForSmallBytes: 100, perPeerBytes: 300, reservedForTrustedBytes: 250 });
    // Many attacking peers, each within its own cap, fill what untrusted peers may use: 750.
    const attackers = ['a', 'b', 'c', 'd'].map((peer) => budget.tryReserve(0, { peer, announcedBytes: 50 }));
    for (const [i, reservation] of attackers.entries()) expect(reservation?.growTo(i < 3 ? 250 : 1)).toBe(i < 3);
    expect(budget.tryReserve(1, { peer: 'e' })).toBeUndefined();
    // The API server still gets its reviews in.
    const apiServer = budget.tryReserve(0, { peer: 'api', announcedBytes: 50, trusted: true });
    expect(apiServer?.growTo(50)).toBe(true);
    expect(budget.inUseBytes).toBe(800);
    // Released untrusted bytes make room for untrusted peers again.
    attackers[0]?.release();
    expect(budget.tryReserve(0, { peer: 'e' })?.growTo(100)).toBe(true);
  });
});
