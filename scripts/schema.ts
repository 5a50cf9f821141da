/**
 * Writes the JSON Schemas generated from the zod schemas the code parses with:
 * docs/vps-event.schema.json (the event contract), docs/vps-event-outcome.schema.json (what
 * sigma-api reads back) and the `policy` property of the chart's
 * values.schema.json (the policy file). test/unit/sync-contract.test.ts and
 * test/unit/policy-schema.test.ts fail when either is out of date.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { policyJsonSchema } from '../src/policy/policy-file.ts';
import { eventJsonSchema } from '../src/sync/event.ts';
import { outcomeJsonSchema } from '../src/sync/outcome.ts';

await writeFile(new URL('../docs/vps-event.schema.json', import.meta.url), `${JSON.stringify(eventJsonSchema(), null, 2)}\n`);
await writeFile(new URL('../docs/vps-event-outcome.schema.json', import.meta.url), `${JSON.stringify(outcomeJsonSchema(), null, 2)}\n`);

const valuesSchemaFile = new URL('../charts/edge-registrar/values.schema.json', import.meta.url);
const valuesSchema = JSON.parse(await readFile(valuesSchemaFile, 'utf8')) as { properties: Record<string, unknown> };
valuesSchema.properties.policy = policyJsonSchema();
await writeFile(valuesSchemaFile, `${JSON.stringify(valuesSchema, null, 2)}\n`);
