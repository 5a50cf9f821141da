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
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
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
