/** The per-VPS rules file is what scripts/per-vps-rules.ts generates (npm run rules). */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { RULES_FILE, renderRulesFile } from '../../scripts/per-vps-rules.ts';
import { MAX_SHARD_TAGS, renderTagExpressions, TagRenderError } from '../../src/mesh-telemetry/tag-expressions.ts';

const fleetOf = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `vps-jp-${10000 + i}`, country: 'jp', address: `${45 + (i % 150)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 250)}` }));

describe('charts/edge-registrar/files/per-vps-rules.yaml', () => {
  it('is up to date with its generator', async () => {
    expect(await readFile(RULES_FILE, 'utf8'), 'run npm run rules').toBe(renderRulesFile());
  });

  it('merges every shard tag the Telemetry may write, enough for 12,000 VPSs; a fleet past that is refused, never dropped', () => {
    const tags = Array.from({ length: MAX_SHARD_TAGS }, (_, i) => `"${i === 0 ? 'vps' : `vps_${i}`}"`).join(', ');
    expect(renderRulesFile()).toContain(`"vps", "", ${tags}\n`);
    expect(renderTagExpressions('vps', fleetOf(12000), (v) => v.name).length).toBeLessThanOrEqual(MAX_SHARD_TAGS);
    expect(() => renderTagExpressions('vps', fleetOf(20000), (v) => v.name)).toThrow(TagRenderError);
  });
});
