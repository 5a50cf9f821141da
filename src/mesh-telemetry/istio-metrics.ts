/** Istio's metric selectors (telemetry.istio.io MetricSelector.IstioMetric), for configuration. */
export const ISTIO_METRICS = ['ALL_METRICS', 'REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE', 'RESPONSE_SIZE', 'TCP_OPENED_CONNECTIONS', 'TCP_CLOSED_CONNECTIONS', 'TCP_SENT_BYTES', 'TCP_RECEIVED_BYTES', 'GRPC_REQUEST_MESSAGES', 'GRPC_RESPONSE_MESSAGES'] as const;
export type IstioMetric = (typeof ISTIO_METRICS)[number];
