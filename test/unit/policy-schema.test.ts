/** The chart validates the policy in its values with the JSON Schema generated from the code's own zod schema. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { policyJsonSchema } from '../../src/policy/policy-file.ts';

describe("the chart's policy schema", () => {
  it('is the one generated from the schema the code parses the policy with (npm run schema writes it)', async () => {
    const values = JSON.parse(await readFile(new URL('../../charts/edge-registrar/values.schema.json', import.meta.url), 'utf8')) as { properties: { policy: unknown } };
    expect(values.properties.policy).toEqual(policyJsonSchema());
  });
});
