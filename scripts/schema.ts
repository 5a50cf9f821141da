/** Writes docs/vps-event.schema.json from the zod schema the daemon parses events with. */
import { writeFile } from 'node:fs/promises';
import { eventJsonSchema } from '../src/sync/event.ts';

await writeFile(new URL('../docs/vps-event.schema.json', import.meta.url), `${JSON.stringify(eventJsonSchema(), null, 2)}\n`);
