{{- /*
podflow's config files, one per role (keys are podflow's flag names: see `podflow <role> --help`).
Options tied to this chart's structure (listen address, mounts, selector, the pull token) are passed
as flags or set here from their own values, so that a config entry cannot contradict them;
values.schema.json refuses those keys in *.config. Each workload carries a checksum of its own file
only: an exporter setting does not restart the collector on every node.
*/ -}}

{{- /* The collector's config file. */ -}}
{{- define "podflow.collector.config" -}}
{{- /* At SIGTERM a collector reads once more and serves its backlog until the exporter took it: give
that the pod's grace period, less a margin to exit (export-interval must fit in it). */}}
{{- $collector := dict
  "interval" .Values.collector.interval
  "conntrack-acct" .Values.collector.conntrackAcct
  "backlog-max-flows" (int64 .Values.collector.backlogMaxFlows)
  "dns-names" .Values.collector.dnsNames
  "shutdown-timeout" (printf "%ds" (max 0 (sub (int64 .Values.collector.terminationGracePeriodSeconds) 5)))
-}}
{{- if eq .Values.collector.source "cilium" }}
{{- /* No netfilter in this mode: nothing to turn on (and no sysctl mounted). */}}
{{- $_ := set $collector "conntrack-acct" false }}
{{- $_ := set $collector "cilium-bpf-path" .Values.collector.cilium.mapsPath }}
{{- $_ := set $collector "cilium-layout" .Values.collector.cilium.layout }}
{{- $_ := set $collector "cilium-clock" .Values.collector.cilium.clock }}
{{- end }}
{{- $collector = mustMergeOverwrite (include "podflow.commonConfig" . | fromYaml) $collector (deepCopy .Values.collector.config) }}
{{- toYaml $collector }}
{{- end -}}

{{- /* The exporter's config file. */ -}}
{{- define "podflow.exporter.config" -}}
{{- $exporter := dict
  "export-interval" .Values.exporter.exportInterval
  "metrics-prefix" .Values.exporter.metricsPrefix
  "metrics-ttl" .Values.exporter.metricsTtl
  "pull-concurrency" (int64 .Values.exporter.pullConcurrency)
  "pull-timeout" .Values.exporter.pullTimeout
  "cloud" .Values.exporter.cloud
-}}
{{- with .Values.exporter.clusterName }}
{{- $_ := set $exporter "cluster-name" . }}
{{- end }}
{{- with .Values.exporter.metricsLabels }}
{{- $_ := set $exporter "metrics-labels" . }}
{{- end }}
{{- with .Values.exporter.prices }}
{{- $_ := set $exporter "prices" . }}
{{- end }}
{{- if .Values.exporter.destinations }}
{{- /* The list itself is in its own ConfigMap (templates/destinations-configmap.yaml). */}}
{{- $_ := set $exporter "destinations-file" "/etc/podflow/destinations/destinations.yaml" }}
{{- end }}
{{- with .Values.exporter.httpSink }}
{{- if .url }}
{{- $_ := set $exporter "http-sink-url" .url }}
{{- $_ := set $exporter "http-sink-gzip" .gzip }}
{{- $headers := deepCopy .headers }}
{{- if include "podflow.sinkTokenEnabled" $ }}
{{- /* Expanded by podflow from the container's environment, so the token never sits in this ConfigMap. */}}
{{- $_ := set $headers .token.header (trim (printf "%s ${SINK_TOKEN}" .token.scheme)) }}
{{- end }}
{{- if $headers }}
{{- $_ := set $exporter "http-sink-headers" $headers }}
{{- end }}
{{- else if include "podflow.sinkTokenEnabled" $ }}
{{- fail "exporter.httpSink.token is set but exporter.httpSink.url is empty: set the URL the token is for" }}
{{- end }}
{{- end }}
{{- with .Values.exporter.sinks }}
{{- if and $.Values.exporter.httpSink.url (hasKey . "http") }}
{{- fail "exporter.sinks.http: the name http is the sink of exporter.httpSink.url; give the entry another name" }}
{{- end }}
{{- /* As given: ${NAME} stays for podflow to expand from the environment (exporter.sinkEnv), so
secrets never sit in this ConfigMap. */}}
{{- $_ := set $exporter "sinks" (deepCopy .) }}
{{- end }}
{{- $exporter = mustMergeOverwrite (include "podflow.commonConfig" . | fromYaml) $exporter (deepCopy .Values.exporter.config) }}
{{- toYaml $exporter }}
{{- end -}}
