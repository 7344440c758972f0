{{/* Chart name, 63 characters at most (a DNS label). */}}
{{- define "podflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name: "<release>-podflow", or the release name when it already holds the chart name. */}}
{{- define "podflow.fullname" -}}
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

{{- define "podflow.collector.fullname" -}}
{{- printf "%s-collector" (include "podflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podflow.exporter.fullname" -}}
{{- printf "%s-exporter" (include "podflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "podflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "podflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: podflow
{{- end -}}

{{/*
Selector labels of the collector pods. The exporter finds its collectors with exactly these labels
(--collector-selector, built by "podflow.collector.selector" below): keep the two in step.
*/}}
{{- define "podflow.collector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: collector
{{- end -}}

{{- define "podflow.collector.selector" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=collector" (include "podflow.name" .) .Release.Name -}}
{{- end -}}

{{- define "podflow.exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: exporter
{{- end -}}

{{- define "podflow.collector.serviceAccountName" -}}
{{- default (include "podflow.collector.fullname" .) .Values.collector.serviceAccount.name -}}
{{- end -}}

{{- define "podflow.exporter.serviceAccountName" -}}
{{- default (include "podflow.exporter.fullname" .) .Values.exporter.serviceAccount.name -}}
{{- end -}}

{{/* registry/repository:tag@digest; the tag defaults to the chart's appVersion. */}}
{{- define "podflow.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the HTTP sink's token (the chart's own, or existingSecret). */}}
{{- define "podflow.sinkSecretName" -}}
{{- default (printf "%s-sink" (include "podflow.fullname" .)) .Values.exporter.httpSink.token.existingSecret -}}
{{- end -}}

{{- define "podflow.sinkTokenEnabled" -}}
{{- if or .Values.exporter.httpSink.token.value .Values.exporter.httpSink.token.existingSecret -}}true{{- end -}}
{{- end -}}

{{/*
podflow options shared by both roles, as the YAML config file holds them (keys are flag names).
*/}}
{{- define "podflow.commonConfig" -}}
log-level: {{ .Values.logLevel }}
exclude-namespaces: {{ toJson .Values.excludeNamespaces }}
host-network: {{ .Values.hostNetworkPods }}
group-public-ips: {{ .Values.groupPublicIps }}
pod-retention: {{ .Values.podRetention | quote }}
{{- end -}}
