{{/* Names: every object's name derives from fullname, so fullnameOverride renames them all. */}}
{{- define "edge-registrar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-registrar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "edge-registrar.webhookName" -}}{{ include "edge-registrar.fullname" . | trunc 55 | trimSuffix "-" }}-webhook{{- end -}}
{{- define "edge-registrar.syncName" -}}{{ include "edge-registrar.fullname" . | trunc 58 | trimSuffix "-" }}-sync{{- end -}}
{{- define "edge-registrar.redisSecretName" -}}{{ include "edge-registrar.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end -}}

{{/* The Secret the webhook serves from, whichever mode made it. */}}
{{- define "edge-registrar.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "provided" -}}
{{- .Values.certificates.provided.secretName -}}
{{- else -}}
{{- include "edge-registrar.webhookName" . | trunc 59 | trimSuffix "-" }}-tls
{{- end -}}
{{- end -}}

{{- define "edge-registrar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-registrar.labels" -}}
helm.sh/chart: {{ include "edge-registrar.chart" . }}
app.kubernetes.io/name: {{ include "edge-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edge-registrar
{{- end -}}

{{- define "edge-registrar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-registrar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edge-registrar.image" -}}
{{ required "image.repository: name the image you built from the repository's Dockerfile and pushed (<your-registry>/edge-registrar); there is no public image, and webhooks with failurePolicy Fail in front of pods that cannot pull theirs would refuse every WorkloadEntry write" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The sync daemon's identity as the API server sees it: the policy's ownership rule allows it. */}}
{{- define "edge-registrar.syncUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "edge-registrar.syncName" . }}
{{- end -}}

{{/* The webhook's certificate-mode arguments and the caBundle line for each webhook. */}}
{{- define "edge-registrar.caBundle" -}}
{{- if eq .Values.certificates.mode "provided" }}
      caBundle: {{ .Values.certificates.provided.caBundle }}
{{- end -}}
{{- end -}}

{{- define "edge-registrar.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "edge-registrar.webhookName" . }}
{{- end -}}
{{- end -}}

{{- define "edge-registrar.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/*
  NODE_OPTIONS sized from the container's memory limit. V8 sizes its heap for the node's
  memory, not the container's: on a large node the young generation alone grows to 128 MiB
  under load (two 64 MiB semi-spaces), and the old space may grow past the limit before a
  major GC, so a busy pod is OOM-killed. The old space gets 40% of the limit, the semi-spaces
  16 MiB; the rest is code, TLS buffers and the runtime. `nodeOptions` overrides it.
  Call with (dict "component" .Values.webhook "name" "webhook").
*/}}
{{- define "edge-registrar.nodeOptions" -}}
{{- $c := .component -}}
{{- if $c.nodeOptions -}}
{{- $c.nodeOptions -}}
{{- else -}}
{{- $limit := (($c.resources).limits).memory | default "" | toString -}}
{{- if eq $limit "" -}}
--max-semi-space-size=16
{{- else -}}
{{- $mib := 0 -}}
{{- if hasSuffix "Mi" $limit -}}{{- $mib = trimSuffix "Mi" $limit | int -}}
{{- else if hasSuffix "Gi" $limit -}}{{- $mib = mul (trimSuffix "Gi" $limit | int) 1024 -}}
{{- else -}}{{- fail (printf "%s.resources.limits.memory %q: write it in Mi or Gi, so the heap can be sized from it, or set %s.nodeOptions" .name $limit .name) -}}
{{- end -}}
--max-old-space-size={{ div (mul $mib 40) 100 }} --max-semi-space-size=16
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A label map as k=v,k=v (sorted), the form the sync daemon's --telemetry-selector reads. */}}
{{- define "edge-registrar.labelList" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* targetRefs as group/Kind/name,..., the form --telemetry-target-refs reads. */}}
{{- define "edge-registrar.targetRefList" -}}
{{- $refs := list -}}
{{- range . -}}{{- $refs = append $refs (printf "%s/%s/%s" (default "" .group) .kind .name) -}}{{- end -}}
{{- join "," $refs -}}
{{- end }}

{{/* Fails the render with Go's RE2 parse error for a pattern RE2 cannot compile; renders nothing otherwise. */}}
{{- define "policy.namePattern must be an RE2 regular expression" -}}
{{- $_ := mustRegexMatch . "" -}}
{{- end -}}

{{- /*
The addresses the API server calls the webhook from, comma-separated: networkPolicy.apiServerCIDRs
and, with networkPolicy.apiServerFromEndpoints, the kubernetes Service's EndpointSlice addresses
(looked up at install; helm template finds none). The NetworkPolicy admits them and the webhook
trusts them (EDGE_REGISTRAR_API_SERVER_CIDRS).
*/ -}}
{{- define "edge-registrar.apiServerCIDRs" -}}
{{- $np := .Values.networkPolicy -}}
{{- $cidrs := list -}}
{{- range $np.apiServerCIDRs }}{{ $cidrs = append $cidrs . }}{{ end -}}
{{- if $np.apiServerFromEndpoints -}}
{{- range (lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "").items | default list -}}
{{- if eq (index (.metadata.labels | default dict) "kubernetes.io/service-name" | default "") "kubernetes" -}}
{{- range .endpoints }}{{ range .addresses }}{{ $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) }}{{ end }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- join "," $cidrs -}}
{{- end -}}
