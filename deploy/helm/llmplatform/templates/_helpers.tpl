{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "llmplatform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; component names add a suffix, so it stays under 50 characters. */}}
{{- define "llmplatform.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llmplatform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmplatform.labels" -}}
helm.sh/chart: {{ include "llmplatform.chart" . }}
app.kubernetes.io/name: {{ include "llmplatform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "web"). */}}
{{- define "llmplatform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmplatform.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmplatform.componentLabels" -}}
{{ include "llmplatform.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmplatform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmplatform.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "llmplatform.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "llmplatform.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "llmplatform.fullname" .) -}}
{{- else -}}
{{- .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Checks across keys that the schema cannot say clearly ---------------------------------- */}}

{{- define "llmplatform.validate" -}}
{{- $sources := 0 -}}
{{- if .Values.secrets.existingSecret }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.secrets.secretProviderClass }}{{ $sources = add1 $sources }}{{ end -}}
{{- if .Values.secrets.create }}{{ $sources = add1 $sources }}{{ end -}}
{{- if ne $sources 1 -}}
{{- fail "secrets: set exactly one of secrets.existingSecret, secrets.secretProviderClass or secrets.create (trials only)" -}}
{{- end -}}
{{- if and .Values.secrets.create (not .Values.secrets.values) -}}
{{- fail "secrets.create: give the secrets in secrets.values (one per name in secrets.files)" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.url -}}
{{- fail "postgresql.enabled and externalDatabase.url: choose one database" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.externalRedis.url -}}
{{- fail "redis.enabled and externalRedis.url: choose one Redis" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled .Values.secrets.secretProviderClass -}}
{{- fail "postgresql.enabled needs its password in a Kubernetes Secret (secrets.existingSecret or secrets.create), which the PostgreSQL pod reads as POSTGRES_PASSWORD" -}}
{{- end -}}
{{- if and .Values.web.autoscaling.enabled (gt (int .Values.web.autoscaling.minReplicas) (int .Values.web.autoscaling.maxReplicas)) -}}
{{- fail "web.autoscaling: minReplicas is larger than maxReplicas" -}}
{{- end -}}
{{- $secretNames := list "SECRET_KEY" "LLMP_API_KEY_PEPPER" "LLMP_API_KEY_PEPPERS_PREVIOUS" "LLMP_SUBJECT_HMAC_KEY" "LLMP_MASTER_KEY" "LLMP_MASTER_KEYS_PREVIOUS" "DATABASE_PASSWORD" "DATABASE_URL" "REDIS_URL" "CELERY_BROKER_URL" "LLMP_OBSERVABILITY_TOKEN" "EMAIL_HOST_PASSWORD" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" -}}
{{- range $name, $_ := .Values.config.extraEnv -}}
{{- /* NAME_REF (a reference into a secret store) is fine: it holds no secret. */ -}}
{{- if or (has $name $secretNames) (hasSuffix "_FILE" $name) -}}
{{- fail (printf "config.extraEnv.%s: secrets do not go in plain values; add %s to secrets.files and to the Secret or SecretProviderClass" $name (trimSuffix "_FILE" $name)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.bearerTokenSecret.name (not (has "LLMP_OBSERVABILITY_TOKEN" .Values.secrets.files)) -}}
{{- fail "metrics.serviceMonitor.bearerTokenSecret: add LLMP_OBSERVABILITY_TOKEN to secrets.files too, so the platform knows the token Prometheus sends" -}}
{{- end -}}
{{- end -}}

{{/* Environment and volumes shared by every role ------------------------------------------ */}}

{{/* The settings read from the mounted secret: secrets.files minus what is given otherwise. */}}
{{- define "llmplatform.secretFiles" -}}
{{- $skip := list -}}
{{- if or .Values.externalDatabase.url .Values.postgresql.enabled -}}{{- $skip = append $skip "DATABASE_URL" -}}{{- end -}}
{{- if or .Values.externalRedis.url .Values.redis.enabled -}}{{- $skip = concat $skip (list "REDIS_URL" "CELERY_BROKER_URL") -}}{{- end -}}
{{- if .Values.postgresql.enabled -}}{{- $skip = append $skip "DATABASE_PASSWORD" -}}{{- end -}}
{{- $files := list -}}
{{- range .Values.secrets.files -}}{{- if not (has . $skip) -}}{{- $files = append $files . -}}{{- end -}}{{- end -}}
{{- toJson (uniq $files) -}}
{{- end -}}

{{- define "llmplatform.allowedHosts" -}}
{{- $fullname := include "llmplatform.fullname" . -}}
{{- $hosts := list -}}
{{- if .Values.ingress.enabled -}}{{- $hosts = concat $hosts .Values.ingress.hosts -}}{{- end -}}
{{- $hosts = concat $hosts .Values.config.allowedHosts -}}
{{- $hosts = concat $hosts (list $fullname (printf "%s.%s" $fullname .Release.Namespace) (printf "%s.%s.svc" $fullname .Release.Namespace) (printf "%s.%s.svc.cluster.local" $fullname .Release.Namespace)) -}}
{{- /* The pod's own address: the kubelet's probes and Prometheus send it as the Host. */ -}}
{{- $hosts = append $hosts "$(POD_IP)" -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}

{{- define "llmplatform.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LLMP_ENV
  value: {{ .Values.config.env | quote }}
- name: ALLOWED_HOSTS
  value: {{ include "llmplatform.allowedHosts" . | quote }}
{{- $origins := .Values.config.csrfTrustedOrigins -}}
{{- if and (not $origins) .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts }}{{ $origins = append $origins (printf "https://%s" .) }}{{ end -}}
{{- end }}
{{- if $origins }}
- name: CSRF_TRUSTED_ORIGINS
  value: {{ join "," $origins | quote }}
{{- end }}
{{- $base := .Values.config.publicBaseUrl -}}
{{- if and (not $base) .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $base = printf "https://%s" (first .Values.ingress.hosts) -}}
{{- end }}
{{- if $base }}
- name: LLMP_PUBLIC_BASE_URL
  value: {{ $base | quote }}
{{- end }}
- name: LLMP_TRUSTED_PROXY_HOPS
  value: {{ .Values.config.trustedProxyHops | quote }}
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- if .Values.postgresql.enabled }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s@%s-postgresql:5432/%s" .Values.postgresql.username (include "llmplatform.fullname" .) .Values.postgresql.database | quote }}
- name: DATABASE_PASSWORD_FILE
  value: {{ printf "%s/POSTGRES_PASSWORD" .Values.secrets.mountPath | quote }}
{{- else if .Values.externalDatabase.url }}
- name: DATABASE_URL
  value: {{ .Values.externalDatabase.url | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
{{- $redis := printf "redis://%s-redis:6379/0" (include "llmplatform.fullname" .) }}
- name: REDIS_URL
  value: {{ $redis | quote }}
- name: CELERY_BROKER_URL
  value: {{ $redis | quote }}
{{- else if .Values.externalRedis.url }}
- name: REDIS_URL
  value: {{ .Values.externalRedis.url | quote }}
- name: CELERY_BROKER_URL
  value: {{ default .Values.externalRedis.url .Values.externalRedis.brokerUrl | quote }}
{{- end }}
{{- range (include "llmplatform.secretFiles" . | fromJsonArray) }}
- name: {{ printf "%s_FILE" . }}
  value: {{ printf "%s/%s" $.Values.secrets.mountPath . | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "llmplatform.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: secrets
  mountPath: {{ .Values.secrets.mountPath }}
  readOnly: true
{{- end -}}

{{- define "llmplatform.volumes" -}}
# The root filesystem is read-only: the role file, Prometheus' multiprocess files, beat's
# schedule and backups' temporary files go to /tmp.
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: secrets
{{- if .Values.secrets.secretProviderClass }}
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ .Values.secrets.secretProviderClass | quote }}
{{- else }}
  secret:
    secretName: {{ include "llmplatform.secretName" . }}
    defaultMode: 0440
    # Said outright: a missing Secret keeps the pod from starting (and podman 4.3's kube play
    # crashes on a secret volume without the field, podman issue 16636).
    optional: false
{{- end }}
{{- end -}}

{{/* The pod spec's common part: include with (dict "root" $ "component" "web"). */}}
{{- define "llmplatform.podCommon" -}}
serviceAccountName: {{ include "llmplatform.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountToken }}
enableServiceLinks: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
