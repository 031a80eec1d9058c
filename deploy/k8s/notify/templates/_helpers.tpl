{{/*
Names and labels. Every resource carries the standard app.kubernetes.io labels; a service's
resources add app.kubernetes.io/component = the service's name in kebab-case (push-sender).
*/}}

{{- define "notify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-notify", or just the release name when it already contains the chart name. */}}
{{- define "notify.fullname" -}}
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

{{- define "notify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "notify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "notify.labels" -}}
helm.sh/chart: {{ include "notify.chart" . }}
{{ include "notify.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: notify
{{- end -}}

{{/* The component name of a service key: pushSender -> push-sender. */}}
{{- define "notify.component" -}}
{{- kebabcase . -}}
{{- end -}}

{{/* Resource name of one service: (dict "ctx" $ "key" "pushSender") -> <fullname>-push-sender. */}}
{{- define "notify.serviceName" -}}
{{- printf "%s-%s" (include "notify.fullname" .ctx) (include "notify.component" .key) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one service: (dict "ctx" $ "key" "ingest"). Never change them: a
Deployment's selector is immutable. */}}
{{- define "notify.componentSelectorLabels" -}}
{{ include "notify.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ include "notify.component" .key }}
{{- end -}}

{{- define "notify.componentLabels" -}}
{{ include "notify.labels" .ctx }}
app.kubernetes.io/component: {{ include "notify.component" .key }}
{{- end -}}

{{- define "notify.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "notify.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "notify.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The settings variable of a camelCase key: kafkaBootstrap -> NOTIFY_KAFKA_BOOTSTRAP. */}}
{{- define "notify.envName" -}}
{{- printf "NOTIFY_%s" (snakecase . | upper) -}}
{{- end -}}

{{/* Non-secret settings as name: value pairs (the ConfigMap's data). Empty values are left out
so the service's default applies. */}}
{{- define "notify.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if not (eq (toString $value) "") }}
{{ include "notify.envName" $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* env entries reading secret settings from the existing Secret:
(dict "ctx" $ "names" (list "databaseUrl")). */}}
{{- define "notify.secretEnv" -}}
{{- $ctx := .ctx -}}
{{- range .names }}
- name: {{ include "notify.envName" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.secrets.existingSecret }}
      key: {{ index $ctx.Values.secrets.keys . }}
{{- end }}
{{- end -}}

{{/* "true" when KEDA owns this service's replica count: (dict "ctx" $ "svc" $svc). */}}
{{- define "notify.kedaManaged" -}}
{{- if and .ctx.Values.keda.enabled .svc.keda -}}true{{- end -}}
{{- end -}}

{{/* "true" when an HPA (not KEDA) owns this service's replica count. */}}
{{- define "notify.hpaManaged" -}}
{{- if and .svc.autoscaling.enabled (not (include "notify.kedaManaged" .)) -}}true{{- end -}}
{{- end -}}

{{/* Non-secret settings as an env list, for pods that cannot use the ConfigMap (hook Jobs run
before the release's ConfigMap exists). */}}
{{- define "notify.configEnv" -}}
{{- range $key, $value := .Values.config }}
{{- if not (eq (toString $value) "") }}
- name: {{ include "notify.envName" $key }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}
