#!/usr/bin/env node
/**
 * edge-registrar: one executable, one subcommand per job. Usage errors exit 2 with a
 * message naming the flag; everything else is in the subcommand modules.
 */
import { Command, CommanderError, Option } from 'commander';
import { ConfigError } from './config/flags.ts';
import { redactUrlCredentials } from './util/redact.ts';
import { PolicyFileError } from './policy/policy-file.ts';

/**
 * A subcommand's code, loaded only when that subcommand runs: `edge-registrar webhook` never
 * loads the sync daemon, nor `sync` the webhook (test/unit/process-imports.test.ts).
 */
function lazy<A extends unknown[]>(load: () => Promise<(...args: A) => unknown>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    await (await load())(...args);
  };
}
const certsCommand = () => import('./cli/certs-command.ts');
const checkCommand = () => import('./cli/check-command.ts');
const doctorCommand = () => import('./cli/doctor-command.ts');
const statusCommand = () => import('./cli/status-command.ts');
const policyCommand = () => import('./cli/policy-command.ts');
const webhookCommand = () => import('./cli/webhook-command.ts');
const syncCommands = () => import('./cli/sync-commands.ts');

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function commonOptions(cmd: Command, withCluster: boolean): Command {
  cmd.option('--namespace <name>', 'namespace of the WorkloadEntries (env AIRPORT_NAMESPACE, default airport-prod)');
  cmd.option('--policy <file>', 'policy YAML (env EDGE_REGISTRAR_POLICY; built-in defaults when unset)');
  cmd.addOption(new Option('--log-level <level>', 'log level (env EDGE_REGISTRAR_LOG_LEVEL)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']));
  if (withCluster) cmd.option('--kubeconfig <file>', 'kubeconfig (env AIRPORT_KUBECONFIG; in-cluster credentials when unset)');
  return cmd;
}

export function buildProgram(): Command {
  const program = new Command('edge-registrar')
    .description('One guarded path for the Istio WorkloadEntries of short-lived VPS nodes.')
    .showHelpAfterError()
    .exitOverride();

  commonOptions(
    program
      .command('webhook')
      .description('serve the mutating and validating admission webhook for WorkloadEntries over HTTPS')
      .option('--host <address>', 'listen address (env EDGE_REGISTRAR_WEBHOOK_HOST, default 0.0.0.0)')
      .option('--port <port>', 'HTTPS port (env EDGE_REGISTRAR_WEBHOOK_PORT, default 8443)')
      .option('--tls-cert <file>', 'serving certificate, reloaded on change (env EDGE_REGISTRAR_TLS_CERT, default certs/tls.crt)')
      .option('--tls-key <file>', 'serving key, reloaded on change (env EDGE_REGISTRAR_TLS_KEY, default certs/tls.key)')
      .option('--metrics-port <port>', 'also serve /metrics, /healthz, /readyz over plain HTTP on this port (env EDGE_REGISTRAR_METRICS_PORT)')
      .option('--istio-api-version <version>', 'WorkloadEntry version to watch: v1, v1beta1 or v1alpha3 (default v1)')
      .option('--shutdown-delay <seconds>', 'on SIGTERM, stay up but not ready this long before draining (env EDGE_REGISTRAR_SHUTDOWN_DELAY_SECONDS, default 5)')
      .addOption(new Option('--cert-mode <mode>', 'files: --tls-cert/--tls-key; self: a CA and certificate kept in a Secret, CA bundle injected, renewed (env EDGE_REGISTRAR_CERT_MODE, default files)').choices(['files', 'self']))
      .option('--cert-secret <name>', 'self mode: the Secret holding the CA and serving certificate (env EDGE_REGISTRAR_CERT_SECRET)')
      .option('--cert-secret-namespace <ns>', "self mode: the Secret's namespace, also the Service's (env EDGE_REGISTRAR_CERT_SECRET_NAMESPACE, else POD_NAMESPACE)")
      .option('--service <name>', "self mode: the webhook's Service, for the certificate's DNS names (env EDGE_REGISTRAR_WEBHOOK_SERVICE)")
      .option('--mutating-webhook <name>', 'self mode: MutatingWebhookConfiguration to inject the CA bundle into (env EDGE_REGISTRAR_MUTATING_WEBHOOK)')
      .option('--validating-webhook <name>', 'self mode: ValidatingWebhookConfiguration to inject the CA bundle into (env EDGE_REGISTRAR_VALIDATING_WEBHOOK)')
      .option('--cert-days <n>', 'self mode: serving certificate validity (env EDGE_REGISTRAR_CERT_DAYS, default 365)')
      .option('--cert-renew-before <days>', 'self mode: renew when fewer days are left (env EDGE_REGISTRAR_CERT_RENEW_BEFORE_DAYS, default 30)')
      .option('--sync-lease <name>', "the sync daemon's Lease in the namespace; the daemon's writes from any other term are refused (env EDGE_REGISTRAR_LEASE_NAME, default edge-registrar-sync)")
      .option('--max-body-bytes-in-flight <bytes>', 'request bodies held at once; more is shed with 429 and Retry-After (env EDGE_REGISTRAR_MAX_BODY_BYTES_IN_FLIGHT, default an eighth of the memory limit, 64 MiB when none is known)')
      .option('--max-connections <n>', 'open connections at most; an untrusted peer may hold 32, untrusted peers together three quarters (env EDGE_REGISTRAR_MAX_CONNECTIONS, default an eighth of the memory limit at 80 KiB each, 256 to 4096)')
      .option('--api-server-cidrs <cidrs>', "the addresses the API server calls from, comma-separated: peers in them are trusted, nobody else (env EDGE_REGISTRAR_API_SERVER_CIDRS; unset, a peer earns trust by sending a review)"),
    true,
  ).action(lazy(async () => (await webhookCommand()).runWebhookCommand));

  commonOptions(
    program
      .command('check')
      .description('check WorkloadEntry manifests (YAML or JSON, multi-document) against the rules; exit 0 pass, 1 violations, 2 usage or parse error')
      .argument('<file...>', 'manifest files; "-" reads standard input')
      .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
      .option('--istio-api-version <version>', 'WorkloadEntry version to list with --kubeconfig (default v1)'),
    true,
  ).action(lazy(async () => (await checkCommand()).runCheck));

  const certs = program.command('certs').description('certificates for the webhook');
  certs
    .command('generate')
    .description('write a CA (ca.crt, ca.key) and a serving certificate (tls.crt, tls.key) made with node-forge')
    .requiredOption('--out <dir>', 'directory to write into')
    .option('--host <name>', 'DNS name for the serving certificate (repeatable; the first is the subject)', collect)
    .option('--ip <address>', 'IP address SAN (repeatable)', collect)
    .option('--days <n>', 'serving certificate validity in days (default 365)')
    .option('--ca-days <n>', 'CA validity in days (default 3650)')
    .option('--force', 'replace existing files')
    .action(lazy(async () => (await certsCommand()).runCertsGenerate));

  const redisOptions = (cmd: Command): Command =>
    cmd
      .option('--redis-url <url>', 'redis:// or rediss:// URL (env REDIS_URL; also REDIS_USERNAME, REDIS_PASSWORD, REDIS_TLS, REDIS_TLS_CA_FILE, REDIS_SENTINELS, REDIS_SENTINEL_NAME)')
      .option('--redis-cluster-nodes <host:port,...>', 'Redis Cluster: a few of its nodes; credentials and TLS as for --redis-url (env REDIS_CLUSTER_NODES)')
      .option('--stream <name>', 'event stream (env EDGE_REGISTRAR_STREAM, default sigma:vps-events)')
      .option('--outcome-stream <name>', "where each event's outcome is recorded (env EDGE_REGISTRAR_OUTCOME_STREAM, default {<stream>}:outcomes)");

  commonOptions(
    redisOptions(program.command('sync'))
      .description("consume sigma-api's register/retire events and keep WorkloadEntries in step (the only writer of managed entries)")
      .option('--group <name>', 'consumer group (env EDGE_REGISTRAR_GROUP, default edge-registrar)')
      .option('--consumer <name>', 'this replica: consumer name and Lease identity (env EDGE_REGISTRAR_CONSUMER, default HOST-PID)')
      .option('--port <port>', '/healthz, /readyz and /metrics (env EDGE_REGISTRAR_SYNC_PORT, default 9090)')
      .addOption(new Option('--orphan-policy <policy>', 'what resync does with managed entries no VPS is registered for (env EDGE_REGISTRAR_ORPHAN_POLICY)').choices(['sync', 'upsert-only']))
      .option('--resync-interval <seconds>', 'drift repair period (env EDGE_REGISTRAR_RESYNC_INTERVAL_SECONDS, default 300)')
      .option('--orphan-grace <seconds>', 'how long an orphan may stay before removal (env EDGE_REGISTRAR_ORPHAN_GRACE_SECONDS, default 600)')
      .option('--resync-dry-run', 'log what resync would change without changing it')
      .option('--lease-name <name>', 'Lease for leader election (env EDGE_REGISTRAR_LEASE_NAME, default edge-registrar-sync)')
      .option('--concurrency <n>', 'Kubernetes writes in flight at once, across VPSs (env EDGE_REGISTRAR_SYNC_CONCURRENCY, default 16)')
      .option('--max-attempts <n>', 'attempts at an event failing for no transient reason before it is dead-lettered (env EDGE_REGISTRAR_MAX_ATTEMPTS, default 10)')
      .option('--commit-replicas <n|auto>', "replicas that must have each commit before its event counts as done (WAIT); auto: one where the primary has any (env EDGE_REGISTRAR_COMMIT_REPLICAS, default auto)")
      .option('--dlq-max-length <n>', 'trim the dead-letter stream to about this many entries (env EDGE_REGISTRAR_DLQ_MAX_LENGTH, default 100000)')
      .option('--outcome-max-length <n>', 'trim the outcome stream to about this many records (env EDGE_REGISTRAR_OUTCOME_MAX_LENGTH, default 100000)')
      .option('--no-kube-events', 'write no Kubernetes Events on the entries and the Lease (env EDGE_REGISTRAR_KUBE_EVENTS=false)')
      .option('--kube-events-burst <n>', 'Kubernetes Events the daemon may write at once, beyond the per-object limit (env EDGE_REGISTRAR_KUBE_EVENTS_BURST, default 100)')
      .option('--kube-events-per-minute <n>', 'Kubernetes Events the daemon earns a minute after the burst (env EDGE_REGISTRAR_KUBE_EVENTS_PER_MINUTE, default 60)')
      .option('--istio-api-version <version>', 'WorkloadEntry version to write (default v1)')
      .option('--telemetry', 'keep the managed Telemetry: per-VPS metric tags on the ingress gateway (env EDGE_REGISTRAR_TELEMETRY)')
      .option('--telemetry-namespace <ns>', "the gateway's namespace, where the Telemetry lives (env EDGE_REGISTRAR_TELEMETRY_NAMESPACE, default istio-system)")
      .option('--telemetry-name <name>', 'the Telemetry (env EDGE_REGISTRAR_TELEMETRY_NAME, default edge-registrar-vps)')
      .option('--telemetry-selector <k=v,...>', "the gateway's pod labels (env EDGE_REGISTRAR_TELEMETRY_SELECTOR, default istio=ingressgateway)")
      .option('--telemetry-target-refs <group/Kind/name,...>', 'Gateway API gateways instead of a selector (env EDGE_REGISTRAR_TELEMETRY_TARGET_REFS)')
      .option('--telemetry-metrics <METRIC,...>', "Istio metrics that get the tags (env EDGE_REGISTRAR_TELEMETRY_METRICS, default REQUEST_COUNT,REQUEST_DURATION)")
      .option('--telemetry-max-expression-codepoints <n>', 'the longest CEL expression written; Envoy drops a tag over 100,000 (env EDGE_REGISTRAR_TELEMETRY_MAX_EXPRESSION_CODEPOINTS, default 40000)')
      .option('--telemetry-max-object-bytes <n>', 'the largest Telemetry written, in bytes; etcd refuses over 1.5 MiB (env EDGE_REGISTRAR_TELEMETRY_MAX_OBJECT_BYTES, default 1400000)')
      .option('--telemetry-source-identity', "also override Istio's source tags so a registered VPS's requests name its WorkloadEntry (Kiali draws each VPS); up to about 1,300 VPSs with the default budget (env EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY)"),
    true,
  ).action(lazy(async () => (await syncCommands()).runSyncCommand));

  commonOptions(
    redisOptions(program.command('doctor'))
      .description("check a live cluster and Redis against what per-VPS entries and metrics need; prints a checklist with the fix for each failure, exit 1 when any fails")
      .option('--group <name>', 'consumer group (env EDGE_REGISTRAR_GROUP, default edge-registrar)')
      .option('--webhook-name <name>', 'the Mutating/ValidatingWebhookConfiguration (default edge-registrar)')
      .option('--cert-secret <namespace/name>', "the webhook's certificate Secret, to compare its CA with the caBundle and report its expiry")
      .option('--istiod-namespace <ns>', "istiod's namespace, for the mesh config and istiod's settings (default istio-system)")
      .option('--telemetry', 'per-VPS metrics are on: check the gateway and the managed Telemetry (env EDGE_REGISTRAR_TELEMETRY)')
      .option('--telemetry-namespace <ns>', "the gateway's namespace (default istio-system)")
      .option('--telemetry-name <name>', 'the managed Telemetry (default edge-registrar-vps)')
      .option('--telemetry-selector <k=v,...>', "the gateway's pod labels (default istio=ingressgateway)")
      .option('--istio-api-version <version>', 'Istio networking API version to read (default v1)')
      .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text')),
    true,
  ).action(lazy(async () => (await doctorCommand()).runDoctor));

  commonOptions(
    redisOptions(program.command('status'))
      .description("one VPS as edge-registrar sees it: its desired state, its WorkloadEntry, the last outcome recorded for it (with the event's stream id and, for a dead letter, the letter's id), and whether the managed Telemetry attributes its address; exit 1 when no event of the VPS took effect or its last one was dead-lettered")
      .argument('<vps-id>', "sigma-api's id for the VPS")
      .option('--telemetry', 'per-VPS metrics should be on: a missing Telemetry is reported as such (without it, a missing Telemetry means they are off) (env EDGE_REGISTRAR_TELEMETRY)')
      .option('--telemetry-namespace <ns>', "the gateway's namespace (default istio-system)")
      .option('--telemetry-name <name>', 'the managed Telemetry (default edge-registrar-vps)')
      .option('--istio-api-version <version>', 'Istio networking API version to read (default v1)')
      .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text')),
    true,
  ).action(lazy(async () => (await statusCommand()).runStatus));

  /** What `publish` and `backfill` check events against before they add them. */
  const eventChecks = (cmd: Command): Command =>
    cmd
      .option('--policy <file>', 'policy YAML whose content rules each register is checked against, as the sync daemon checks it (env EDGE_REGISTRAR_POLICY; built-in defaults when unset)')
      .option('--namespace <name>', 'namespace of the WorkloadEntries (env AIRPORT_NAMESPACE, default airport-prod)')
      .option('--no-check', "skip the policy's content rules (the event contract is always checked)");
  const waitOptions = (cmd: Command): Command =>
    cmd
      .option('--wait', "wait for the event's outcome and print it; exit 0 applied, deleted or unchanged, 3 dead-lettered, 4 superseded, 5 trimmed, 6 no outcome in time")
      .option('--wait-timeout <seconds>', 'how long --wait waits (default 60)');

  const publishCmd = program.command('publish').description('publish a register or retire event (what sigma-api does), checked as the sync daemon would check it; exit 2 when refused (nothing published)');
  waitOptions(eventChecks(redisOptions(publishCmd.command('register'))))
    .requiredOption('--vps-id <id>', "sigma-api's VPS id")
    .requiredOption('--name <name>', 'entry name, e.g. vps-jp-01')
    .requiredOption('--address <ip>', 'public IP address')
    .requiredOption('--country <cc>', 'ISO 3166-1 alpha-2, lower case')
    .option('--label <key=value>', 'extra label (repeatable)', collect)
    .option('--occurred-at <rfc3339>', 'when it happened')
    .action(async (flags: Record<string, string | string[] | boolean | undefined>) => { await (await syncCommands()).runPublish('register', flags); });
  waitOptions(eventChecks(redisOptions(publishCmd.command('retire'))))
    .requiredOption('--vps-id <id>', "sigma-api's VPS id")
    .option('--name <name>', 'entry name, when known')
    .option('--occurred-at <rfc3339>', 'when it happened')
    .action(async (flags: Record<string, string | boolean | undefined>) => { await (await syncCommands()).runPublish('retire', flags); });

  eventChecks(redisOptions(program.command('backfill')))
    .description('publish register events for existing VPSs from a JSON or CSV list (file or http(s) URL), through the same path; every row is checked as the sync daemon would check it before any is published')
    .requiredOption('--from <file|url>', 'JSON array (or {items:[...]}) or CSV with vps_id,name,address,country[,labels]')
    .option('--dry-run', 'print the events instead of publishing them')
    .option('--timeout <seconds>', 'give up fetching --from a URL after this long (default 30)')
    .action(lazy(async () => (await syncCommands()).runBackfill));

  const dlq = program.command('dlq').description('inspect and replay dead-lettered events ({<stream>}:dlq)');
  redisOptions(program.command('migrate-keys'))
    .description("move an install's keys from their old names (edge-registrar:<namespace>:..., <stream>:dlq) into the stream's hash slot, as the sync leader does at the start of every term; needs a Redis user that may SCAN and reach both")
    .option('--namespace <name>', 'namespace of the WorkloadEntries (env AIRPORT_NAMESPACE, default airport-prod)')
    .action(lazy(async () => (await syncCommands()).runMigrateKeys));
  redisOptions(dlq.command('list')).option('--count <n>', 'at most this many (default 100)').action(lazy(async () => (await syncCommands()).runDlqList));
  redisOptions(dlq.command('show').argument('<id>', "the dead letter's id, or the id of the event it was made from (an outcome's dlq_id or source_id)")).action(lazy(async () => (await syncCommands()).runDlqShow));
  redisOptions(dlq.command('replay').argument('[id]', "the dead letter's id, or the id of the event it was made from")).option('--all', 'every dead-lettered event').action(lazy(async () => (await syncCommands()).runDlqReplay));
  redisOptions(dlq.command('purge').argument('[id]')).option('--all', 'every dead-lettered event').action(lazy(async () => (await syncCommands()).runDlqPurge));

  const policy = program.command('policy').description('the rules as data');
  policy
    .command('print')
    .description('print the policy in force (the file given, or the built-in defaults) as YAML')
    .option('--policy <file>', 'policy YAML (env EDGE_REGISTRAR_POLICY)')
    .action(lazy(async () => (await policyCommand()).runPolicyPrint));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; everything else commander refuses is a usage error.
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help' ? 0 : 2;
    }
    if (error instanceof ConfigError || error instanceof PolicyFileError) {
      console.error(`edge-registrar: ${error.message}`);
      return 2;
    }
    // Whatever failed may quote a URL with credentials in it (a Redis URL, a --from URL).
    console.error(`edge-registrar: ${redactUrlCredentials(error instanceof Error ? error.message : String(error))}`);
    return 1;
  }
}

// Run when executed, not when imported by tests.
if (import.meta.main) {
  process.exitCode = await main(process.argv);
}
