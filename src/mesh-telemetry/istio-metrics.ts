/** Istio's metric selectors (telemetry.istio.io MetricSelector.IstioMetric), for configuration. */
export const ISTIO_METRICS = ['ALL_METRICS', 'REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE', 'RESPONSE_SIZE', 'TCP_OPENED_CONNECTIONS', 'TCP_CLOSED_CONNECTIONS', 'TCP_SENT_BYTES', 'TCP_RECEIVED_BYTES', 'GRPC_REQUEST_MESSAGES', 'GRPC_RESPONSE_MESSAGES'] as const;
export type IstioMetric = (typeof ISTIO_METRICS)[number];

/**
 * The metrics the per-VPS tags can describe: Istio's HTTP (and gRPC) request metrics. The tags
 * read request headers, which TCP metrics do not have (the expression fails and the tag says
 * "unknown"), and ALL_METRICS is expanded by istiod into every metric, TCP ones included
 * (pilot/pkg/model/telemetry.go; proven in test/e2e/telemetry.test.ts).
 */
export const TAGGABLE_ISTIO_METRICS = ['REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE', 'RESPONSE_SIZE', 'GRPC_REQUEST_MESSAGES', 'GRPC_RESPONSE_MESSAGES'] as const satisfies readonly IstioMetric[];
