{{- /* The exporter's pod template, shared by its Deployment (one exporter) and its StatefulSet
(exporter.shards > 1). */ -}}
{{- define "podflow.exporter.podTemplate" -}}
metadata:
  labels:
    {{- include "podflow.exporter.selectorLabels" . | nindent 4 }}
    {{- with .Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .Values.exporter.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "podflow.exporter.config" . | sha256sum }}
    {{- if .Values.exporter.destinations }}
    checksum/destinations: {{ toYaml .Values.exporter.destinations | sha256sum }}
    {{- end }}
    {{- if .Values.metrics.annotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.exporter.port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with .Values.exporter.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "podflow.exporter.serviceAccountName" . }}
  {{- with .Values.exporter.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.exporter.terminationGracePeriodSeconds }}
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with .Values.exporter.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.exporter.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.exporter.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $podSecurityContext := include "podflow.exporter.podSecurityContext" . | fromYaml }}
  securityContext:
    {{- range $k, $v := .Values.exporter.podSecurityContext }}{{ $_ := set $podSecurityContext $k $v }}{{ end }}
    {{- toYaml $podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: {{ include "podflow.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - exporter
        - --config=/etc/podflow/config/exporter.yaml
        # Every address, IPv4 and IPv6: the pod's address family is the cluster's.
        - --listen=:{{ .Values.exporter.port }}
        # The token it sends on pulls (the first line of the file).
        - --pull-token-file={{ include "podflow.pullTokenFile" . }}
        # Collectors are found by the labels the collector DaemonSet puts on its pods, in this
        # namespace (POD_NAMESPACE), and pulled on their host-network port.
        - --collector-selector={{ include "podflow.collector.selector" . }}
        - --collector-port={{ .Values.collector.port }}
        {{- if gt (int .Values.exporter.shards) 1 }}
        # Each pod pulls the collectors whose node hashes to its shard: the ordinal of its
        # StatefulSet pod name (POD_NAME below); every pod has the same arguments.
        - --total-shards={{ .Values.exporter.shards }}
        {{- end }}
        {{- range .Values.exporter.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        # The name collectors' leases show, and (StatefulSet) the shard's ordinal.
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if include "podflow.sinkTokenEnabled" . }}
        # Referenced as ${SINK_TOKEN} in http-sink-headers (a PODFLOW_* name would be taken for
        # an option).
        - name: SINK_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "podflow.sinkSecretName" . }}
              key: {{ .Values.exporter.httpSink.token.key }}
        {{- end }}
        {{- /* Secrets referenced as ${NAME} in exporter.sinks. */}}
        {{- range $name, $ref := .Values.exporter.sinkEnv }}
        - name: {{ $name }}
          valueFrom:
            secretKeyRef:
              name: {{ $ref.secretName | quote }}
              key: {{ $ref.key | quote }}
        {{- end }}
        {{- with .Values.exporter.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.exporter.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        initialDelaySeconds: 10
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        periodSeconds: 5
        timeoutSeconds: 5
        failureThreshold: 3
      resources:
        {{- toYaml .Values.exporter.resources | nindent 8 }}
      {{- $securityContext := include "podflow.exporter.securityContext" . | fromYaml }}
      securityContext:
        {{- range $k, $v := .Values.exporter.securityContext }}{{ $_ := set $securityContext $k $v }}{{ end }}
        {{- toYaml $securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/podflow/config
          readOnly: true
        {{- include "podflow.pullTokenMount" . | nindent 8 }}
        {{- if .Values.exporter.destinations }}
        - name: destinations
          mountPath: /etc/podflow/destinations
          readOnly: true
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- with .Values.exporter.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "podflow.fullname" . }}-exporter-config
        items:
          - key: exporter.yaml
            path: exporter.yaml
    {{- include "podflow.pullTokenVolume" . | nindent 4 }}
    {{- if .Values.exporter.destinations }}
    - name: destinations
      configMap:
        name: {{ include "podflow.fullname" . }}-exporter-destinations
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.exporter.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
