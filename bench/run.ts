/**
 * `npm run bench`: every benchmark, each printing its figures beside a baseline measured in
 * the same run. Arguments are passed on (for example `npm run bench -- --vps 2000`).
 */
await import('./sync.ts');
await import('./cert-renewal.ts');
