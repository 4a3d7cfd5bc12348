{{- define "embed-worker.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "embed-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embed-worker.labels" -}}
{{ include "embed-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Redis URL when the chart deploys Redis itself. */}}
{{- define "embed-worker.redisUrl" -}}
{{- if .Values.redis.deploy -}}
{{- printf "redis://%s-redis:6379/0" (include "embed-worker.fullname" .) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "embed-worker.validate" -}}
{{- if and .Values.autoscaling.keda.enabled (gt (int .Values.autoscaling.keda.maxReplicaCount) (int .Values.kafka.partitions)) -}}
{{- fail "autoscaling.keda.maxReplicaCount must not exceed kafka.partitions: extra replicas would sit idle" -}}
{{- end -}}
{{- if and .Values.autoscaling.hpa.enabled (gt (int .Values.autoscaling.hpa.maxReplicas) (int .Values.kafka.partitions)) -}}
{{- fail "autoscaling.hpa.maxReplicas must not exceed kafka.partitions: extra replicas would sit idle" -}}
{{- end -}}
{{- if and .Values.redis.url .Values.redis.urlSecret.name -}}
{{- fail "set redis.url or redis.urlSecret.name, not both" -}}
{{- end -}}
{{- end -}}

{{/* The sink's pods: labels of their own, so the worker's Deployment and Service never select them. */}}
{{- define "embed-worker.sinkSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-sink
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
