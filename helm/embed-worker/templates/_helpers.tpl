{{/* The chart's name (nameOverride wins), at most 63 characters. */}}
{{- define "embed-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: fullnameOverride, else <release>-<name> (as chart 0.2 named it: a
rename would replace the sink's StatefulSet and its index volume on upgrade), at most 63 characters. */}}
{{- define "embed-worker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "embed-worker.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one of the chart's parts: the base name cut so that "-<suffix>" still fits in 63
(or .max). Call with (dict "root" $ "suffix" "redis"). */}}
{{- define "embed-worker.partname" -}}
{{- $room := sub (sub (default 63 .max) 1) (len .suffix) | int -}}
{{- printf "%s-%s" (include "embed-worker.fullname" .root | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{/* The sink's StatefulSet (and Service): at most 52 characters, since its pods carry a
controller-revision-hash label of the name plus 11 characters, itself limited to 63. */}}
{{- define "embed-worker.sinkName" -}}
{{- include "embed-worker.partname" (dict "root" . "suffix" "sink" "max" 52) -}}
{{- end -}}

{{/* The worker pods' selector. The sink and the chart's Redis carry a name of their own, so that
nothing selecting workers (Service, PDB, HPA, monitors, policies) ever selects them. */}}
{{- define "embed-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embed-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embed-worker.sinkSelectorLabels" -}}
app.kubernetes.io/name: {{ include "embed-worker.name" . | trunc 58 | trimSuffix "-" }}-sink
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embed-worker.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "embed-worker.name" . | trunc 57 | trimSuffix "-" }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels every object carries besides its selector labels. */}}
{{- define "embed-worker.commonLabels" -}}
app.kubernetes.io/part-of: {{ include "embed-worker.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "embed-worker.labels" -}}
{{ include "embed-worker.selectorLabels" . }}
{{ include "embed-worker.commonLabels" . }}
{{- end -}}

{{- define "embed-worker.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- $tag := default .Chart.AppVersion $image.tag -}}
{{- if $image.variant -}}{{- $tag = printf "%s-%s" $tag $image.variant -}}{{- end -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "embed-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "embed-worker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL when the chart deploys Redis itself. */}}
{{- define "embed-worker.redisUrl" -}}
{{- if .Values.redis.deploy -}}
{{- printf "redis://%s:6379/0" (include "embed-worker.partname" (dict "root" . "suffix" "redis")) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* The pod's CPU cores for its forward passes (EMBED_MODEL__CPU_CORES): the CPU request, else the
limit, rounded down, at least 1; empty with neither. The worker shares them out over `processes` and
sizes its replicas and torch threads from them, not from the node's core count. */}}
{{- define "embed-worker.cpuCores" -}}
{{- $cpu := toString (dig "requests" "cpu" (dig "limits" "cpu" "" .Values.resources) .Values.resources) -}}
{{- if $cpu -}}
{{- $cores := 0.0 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $cores = divf (trimSuffix "m" $cpu | float64) 1000 -}}
{{- else -}}
{{- $cores = float64 $cpu -}}
{{- end -}}
{{- max 1 (floor $cores | int) -}}
{{- end -}}
{{- end -}}

{{/* Settings the chart derives from its own values: setting them under `config` would put the chart
out of step with itself (ports, probes, the grace period, KEDA's view of the group). */}}
{{- define "embed-worker.reservedConfig" -}}
{{- toYaml (dict
  "EMBED_PROCESSES" "processes"
  "EMBED_METRICS__PORT" "metrics.port"
  "EMBED_METRICS__STALL_AFTER_S" "probes.stallAfterSeconds"
  "EMBED_SHUTDOWN_GRACE_S" "shutdown.graceSeconds"
  "EMBED_KAFKA__BOOTSTRAP_SERVERS" "kafka.bootstrapServers"
  "EMBED_KAFKA__INPUT_TOPIC" "kafka.inputTopic"
  "EMBED_KAFKA__GROUP_ID" "kafka.groupId"
  "EMBED_KAFKA__AUTO_OFFSET_RESET" "kafka.autoOffsetReset"
  "EMBED_KAFKA__SECURITY_PROTOCOL" "kafka.securityProtocol"
  "EMBED_KAFKA__SASL_MECHANISM" "kafka.sasl.mechanism"
  "EMBED_KAFKA__SASL_USERNAME" "kafka.sasl.username or kafka.sasl.usernameSecret"
  "EMBED_KAFKA__SASL_PASSWORD" "kafka.sasl.passwordSecret"
  "EMBED_KAFKA__SSL_CAFILE" "kafka.tls.caSecret"
  "EMBED_KAFKA__SSL_CERTFILE" "kafka.tls.clientCertSecret"
  "EMBED_KAFKA__SSL_KEYFILE" "kafka.tls.clientCertSecret"
  "EMBED_KAFKA__GROUP_INSTANCE_ID" "kafka.staticMembership"
  "EMBED_REDIS__URL" "redis.url, redis.urlSecret or redis.deploy"
  "EMBED_REDIS__PASSWORD" "redis.passwordSecret"
  "EMBED_SINK__GROUP_ID" "sink.groupId"
  "EMBED_SINK__PATH" "sink.enabled (the sink's volume)"
  "EMBED_SINK__STORE" "sink.store"
  "EMBED_SINK__POSTGRES_URL" "sink.postgresUrlSecret"
) -}}
{{- end -}}

{{/* Every EMBED_* (and HF_*) variable the ConfigMap holds: the chart's values, then `config` over them. */}}
{{- define "embed-worker.configEnv" -}}
{{- $v := .Values -}}
{{- $env := dict
  "EMBED_KAFKA__BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers
  "EMBED_KAFKA__INPUT_TOPIC" $v.kafka.inputTopic
  "EMBED_KAFKA__OUTPUT_TOPIC" $v.kafka.outputTopic
  "EMBED_KAFKA__DLQ_TOPIC" $v.kafka.dlqTopic
  "EMBED_KAFKA__GROUP_ID" $v.kafka.groupId
  "EMBED_KAFKA__AUTO_OFFSET_RESET" $v.kafka.autoOffsetReset
  "EMBED_KAFKA__SECURITY_PROTOCOL" $v.kafka.securityProtocol
  "EMBED_KAFKA__ASSIGNMENT_STRATEGY" $v.kafka.assignmentStrategy
  "EMBED_KAFKA__EXACTLY_ONCE" $v.kafka.exactlyOnce
  "EMBED_REDIS__ON_ERROR" $v.redis.onError
  "EMBED_MODEL__NAME" $v.model.name
  "EMBED_MODEL__DTYPE" $v.model.dtype
  "EMBED_MODEL__DEVICE" $v.model.device
  "EMBED_LONG_TEXT__POLICY" $v.longText.policy
  "EMBED_METRICS__PORT" $v.metrics.port
  "EMBED_METRICS__STALL_AFTER_S" $v.probes.stallAfterSeconds
  "EMBED_PROCESSES" $v.processes
  "EMBED_SHUTDOWN_GRACE_S" $v.shutdown.graceSeconds
  "HF_HOME" "/tmp/hf"
-}}
{{- $_ := set $env "EMBED_INPUT__FORMAT" $v.input.format -}}
{{- with $v.input.textTemplate }}{{- $_ := set $env "EMBED_INPUT__TEXT_TEMPLATE" . -}}{{- end -}}
{{- with $v.input.idField }}{{- $_ := set $env "EMBED_INPUT__ID_FIELD" . -}}{{- end -}}
{{- with $v.input.metadataFields }}{{- $_ := set $env "EMBED_INPUT__METADATA_FIELDS" . -}}{{- end -}}
{{- with $v.kafka.sasl.mechanism }}{{- $_ := set $env "EMBED_KAFKA__SASL_MECHANISM" . -}}{{- end -}}
{{- with include "embed-worker.redisUrl" . }}{{- $_ := set $env "EMBED_REDIS__URL" . -}}{{- end -}}
{{- with include "embed-worker.cpuCores" . }}{{- $_ := set $env "EMBED_MODEL__CPU_CORES" . -}}{{- end -}}
{{- with $v.torchThreads }}{{- $_ := set $env "EMBED_MODEL__TORCH_THREADS" (toString .) -}}{{- end -}}
{{- if hasPrefix "/" $v.model.name }}{{- $_ := set $env "HF_HUB_OFFLINE" "1" -}}{{- end -}}
{{- if $v.kafka.tls.caSecret.name }}{{- $_ := set $env "EMBED_KAFKA__SSL_CAFILE" "/etc/embed/kafka-tls/ca/ca.crt" -}}{{- end -}}
{{- if $v.kafka.tls.clientCertSecret.name -}}
{{- $_ := set $env "EMBED_KAFKA__SSL_CERTFILE" "/etc/embed/kafka-tls/client/tls.crt" -}}
{{- $_ := set $env "EMBED_KAFKA__SSL_KEYFILE" "/etc/embed/kafka-tls/client/tls.key" -}}
{{- end -}}
{{- $reserved := include "embed-worker.reservedConfig" . | fromYaml -}}
{{- range $name, $value := $v.config -}}
{{- if hasKey $reserved $name -}}
{{- fail (printf "config.%s: the chart sets it from %s; set that instead" $name (get $reserved $name)) -}}
{{- end -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := $env -}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) -}}
{{- $_ := set $env $name (int64 $value | toString) -}}{{/* 1000000 and not 1e+06 */}}
{{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* Kafka credentials and TLS files, for the worker's and the sink's containers. */}}
{{- define "embed-worker.kafkaEnv" -}}
{{- $sasl := .Values.kafka.sasl -}}
{{- if $sasl.usernameSecret.name }}
- name: EMBED_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.usernameSecret.name }}
      key: {{ $sasl.usernameSecret.key }}
{{- else if $sasl.username }}
- name: EMBED_KAFKA__SASL_USERNAME
  value: {{ $sasl.username | quote }}
{{- end }}
{{- if $sasl.passwordSecret.name }}
- name: EMBED_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.passwordSecret.name }}
      key: {{ $sasl.passwordSecret.key }}
{{- end }}
{{- end -}}

{{- define "embed-worker.kafkaTlsVolumes" -}}
{{- $tls := .Values.kafka.tls -}}
{{- if $tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $tls.caSecret.name }}
    items:
      - key: {{ $tls.caSecret.key }}
        path: ca.crt
{{- end }}
{{- if $tls.clientCertSecret.name }}
- name: kafka-client-cert
  secret:
    secretName: {{ $tls.clientCertSecret.name }}
    items:
      - key: {{ $tls.clientCertSecret.certKey }}
        path: tls.crt
      - key: {{ $tls.clientCertSecret.keyKey }}
        path: tls.key
{{- end }}
{{- end -}}

{{- define "embed-worker.kafkaTlsMounts" -}}
{{- if .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/embed/kafka-tls/ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret.name }}
- name: kafka-client-cert
  mountPath: /etc/embed/kafka-tls/client
  readOnly: true
{{- end }}
{{- end -}}

{{/* One probe: an HTTP GET with one process, else an exec asking every process's port. */}}
{{- define "embed-worker.probe" -}}
{{- $root := .root -}}
{{- if gt (int $root.Values.processes) 1 }}
exec:
  command: ["python3", "-m", "worker.observe.probe", {{ .path | quote }}, "--port", {{ $root.Values.metrics.port | quote }}, "--processes", {{ $root.Values.processes | quote }}]
timeoutSeconds: 10
{{- else }}
httpGet:
  path: {{ .path }}
  port: metrics
timeoutSeconds: 5
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/* The metrics port of each process: metrics, metrics-1, metrics-2, ... */}}
{{- define "embed-worker.metricsPorts" -}}
{{- range $i, $_ := until (int .Values.processes) }}
- name: {{ if eq $i 0 }}metrics{{ else }}metrics-{{ $i }}{{ end }}
  port: {{ add $.Values.metrics.port $i }}
{{- end }}
{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "embed-worker.validate" -}}
{{- $v := .Values -}}
{{- $processes := int $v.processes -}}
{{- $partitions := int $v.kafka.partitions -}}
{{- if $v.autoscaling.keda.enabled -}}
{{- if not (.Capabilities.APIVersions.Has "keda.sh/v1alpha1") -}}
{{- fail "autoscaling.keda.enabled: this cluster has no KEDA (keda.sh/v1alpha1): install KEDA, or set autoscaling.keda.enabled=false (helm template: --api-versions keda.sh/v1alpha1)" -}}
{{- end -}}
{{- if gt (mul (int $v.autoscaling.keda.maxReplicaCount) $processes) $partitions -}}
{{- fail "autoscaling.keda.maxReplicaCount × processes must not exceed kafka.partitions: extra consumers would sit idle" -}}
{{- end -}}
{{- else if $v.autoscaling.hpa.enabled -}}
{{- if gt (mul (int $v.autoscaling.hpa.maxReplicas) $processes) $partitions -}}
{{- fail "autoscaling.hpa.maxReplicas × processes must not exceed kafka.partitions: extra consumers would sit idle" -}}
{{- end -}}
{{- else if gt (mul (int $v.replicaCount) $processes) $partitions -}}
{{- fail "replicaCount × processes must not exceed kafka.partitions: extra consumers would sit idle" -}}
{{- end -}}
{{- if and (or $v.serviceMonitor.enabled $v.podMonitor.enabled (dig "enabled" false (default dict $v.prometheusRule))) (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
{{- fail "serviceMonitor, podMonitor and prometheusRule need the Prometheus operator (monitoring.coreos.com/v1): install it, or disable them (helm template: --api-versions monitoring.coreos.com/v1)" -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled $v.podMonitor.enabled -}}
{{- fail "enable serviceMonitor or podMonitor, not both: every process would be scraped twice" -}}
{{- end -}}
{{- if and (eq $v.input.format "debezium") (not $v.input.textTemplate) -}}
{{- fail "input.format debezium needs input.textTemplate (e.g. \"{title}\\n\\n{body}\")" -}}
{{- end -}}
{{- if and (eq $v.input.format "msgpack") (or $v.input.textTemplate $v.input.idField $v.input.metadataFields) -}}
{{- fail "input.textTemplate, idField and metadataFields map json or debezium records: set input.format" -}}
{{- end -}}
{{- if and $v.sink.enabled (eq $v.sink.store "postgres") (not $v.sink.postgresUrlSecret.name) -}}
{{- fail "sink.store postgres needs sink.postgresUrlSecret.name (a Secret holding the PostgreSQL URL)" -}}
{{- end -}}
{{- if and $v.redis.url $v.redis.urlSecret.name -}}
{{- fail "set redis.url or redis.urlSecret.name, not both" -}}
{{- end -}}
{{- if and $v.redis.deploy (or $v.redis.url $v.redis.urlSecret.name) -}}
{{- fail "redis.deploy runs the chart's own Redis: leave redis.url and redis.urlSecret empty" -}}
{{- end -}}
{{- $sasl := hasPrefix "SASL_" $v.kafka.securityProtocol -}}
{{- if and $sasl (not (and $v.kafka.sasl.mechanism $v.kafka.sasl.passwordSecret.name (or $v.kafka.sasl.username $v.kafka.sasl.usernameSecret.name))) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism, kafka.sasl.username (or usernameSecret) and kafka.sasl.passwordSecret" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and $v.kafka.sasl.mechanism (not $sasl) -}}
{{- fail (printf "kafka.sasl.mechanism is set but kafka.securityProtocol is %s: use SASL_SSL or SASL_PLAINTEXT" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (or $v.kafka.tls.caSecret.name $v.kafka.tls.clientCertSecret.name) (not (has $v.kafka.securityProtocol (list "SSL" "SASL_SSL"))) -}}
{{- fail (printf "kafka.tls is set but kafka.securityProtocol is %s: use SSL or SASL_SSL" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- end -}}

{{/* Scale steps for KEDA's HPA and the CPU fallback: every change of replicas is a rebalance and a
model load, so grow by a few pods a minute and shrink by one at a time. */}}
{{- define "embed-worker.scaleBehavior" -}}
{{- $keda := .Values.autoscaling.keda -}}
behavior:
  scaleUp:
    stabilizationWindowSeconds: 0
    policies:
      - type: Pods
        value: {{ $keda.scaleUpPods }}
        periodSeconds: 60
  scaleDown:
    stabilizationWindowSeconds: {{ $keda.scaleDownStabilizationSeconds }}
    policies:
      - type: Pods
        value: 1
        periodSeconds: {{ $keda.scaleDownPeriodSeconds }}
{{- end -}}
