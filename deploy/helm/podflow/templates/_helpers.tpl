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
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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

{{/*
registry/repository:tag, with @digest appended when one is given (the tag stays readable; the digest
is what the runtime pulls). global.imageRegistry, set by a parent chart, wins over image.registry.
*/}}
{{- define "podflow.image" -}}
{{- $registry := .Values.image.registry -}}
{{- with dig "imageRegistry" "" (.Values.global | default dict) -}}
{{- $registry = . -}}
{{- end -}}
{{- $repo := .Values.image.repository -}}
{{- if $registry -}}
{{- $repo = printf "%s/%s" $registry .Values.image.repository -}}
{{- end -}}
{{- $ref := printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- if .Values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Name of the Secret holding the HTTP sink's token (the chart's own, or existingSecret). */}}
{{- define "podflow.sinkSecretName" -}}
{{- default (printf "%s-sink" (include "podflow.fullname" .)) .Values.exporter.httpSink.token.existingSecret -}}
{{- end -}}

{{- define "podflow.sinkTokenEnabled" -}}
{{- if or .Values.exporter.httpSink.token.value .Values.exporter.httpSink.token.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the pull-API token(s): the user's auth.existingSecret or the chart's own. */}}
{{- define "podflow.pullTokenSecretName" -}}
{{- default (printf "%s-pull-token" (include "podflow.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "podflow.pullTokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{/*
Where the pull-token Secret is mounted, as a directory: the kubelet refreshes a Secret volume's files
when the Secret changes (a subPath mount never sees updates), and podflow re-reads the file, so a
token is rotated without a restart. Not under the config mount: a mount point inside a read-only
ConfigMap volume cannot be created.
*/}}
{{- define "podflow.pullTokenDir" -}}/etc/podflow/pull-token{{- end -}}

{{- define "podflow.pullTokenFile" -}}
{{- printf "%s/%s" (include "podflow.pullTokenDir" .) (include "podflow.pullTokenKey" .) -}}
{{- end -}}

{{/*
The live Secret named by the argument (list $ name) as JSON, "{}" when absent or without a cluster
(helm template, --dry-run). Kept apart so that the one cluster read of the chart is in one place.
*/}}
{{- define "podflow.lookupSecret" -}}
{{- $ := index . 0 -}}
{{- lookup "v1" "Secret" $.Release.Namespace (index . 1) | toJson -}}
{{- end -}}

{{/* The pull-token volume and its mount, the same in both workloads. */}}
{{- define "podflow.pullTokenVolume" -}}
- name: pull-token
  secret:
    secretName: {{ include "podflow.pullTokenSecretName" . }}
    items:
      - key: {{ include "podflow.pullTokenKey" . }}
        path: {{ include "podflow.pullTokenKey" . }}
{{- end -}}

{{- define "podflow.pullTokenMount" -}}
- name: pull-token
  mountPath: {{ include "podflow.pullTokenDir" . }}
  readOnly: true
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
metrics-auth: {{ .Values.metricsAuth }}
{{- end -}}

{{/*
The collector container's securityContext before collector.securityContext. Root without
privileges: uid 0 so that the added capabilities are effective (Kubernetes grants added
capabilities to root only) and the netfilter sysctl is writable. NET_ADMIN dumps conntrack over
ctnetlink and writes net.netfilter.nf_conntrack_acct; in Cilium mode, bpf() opens the pinned
conntrack maps (read-only) instead. NET_RAW (with dnsNames) opens the packet socket that reads the
DNS answers on the node.
*/}}
{{- define "podflow.collector.securityContext" -}}
runAsUser: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
  add:
    {{- if eq .Values.collector.source "cilium" }}
    {{- range .Values.collector.cilium.capabilities }}
    - {{ . }}
    {{- end }}
    {{- else }}
    - NET_ADMIN
    {{- end }}
    {{- if .Values.collector.dnsNames }}
    - NET_RAW
    {{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The exporter pod's securityContext before exporter.podSecurityContext: the image's user. */}}
{{- define "podflow.exporter.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The exporter container's securityContext before exporter.securityContext. */}}
{{- define "podflow.exporter.securityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end -}}
