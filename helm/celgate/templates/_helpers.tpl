{{/* Names */}}
{{- define "celgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celgate.fullname" -}}
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

{{- define "celgate.ollama.fullname" -}}
{{- printf "%s-ollama" (include "celgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "celgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "celgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels */}}
{{- define "celgate.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "celgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: celgate
{{- end -}}

{{- define "celgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "celgate.labels" -}}
{{ include "celgate.commonLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "celgate.ollama.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ollama
{{- end -}}

{{- define "celgate.ollama.labels" -}}
{{ include "celgate.commonLabels" . }}
app.kubernetes.io/component: ollama
{{- end -}}

{{- define "celgate.test.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end -}}

{{/*
An image reference. global.imageRegistry replaces the image's own registry; a digest wins over
the tag. Call with (dict "image" .Values.image "global" .Values.global "defaultTag" "x" "what" "image").
*/}}
{{- define "celgate.image" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- if not .image.repository -}}
{{- fail (printf "%s.repository is empty: name the image" .what) -}}
{{- end -}}
{{- $ref := .image.repository -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- $tag := .image.tag | default .defaultTag -}}
{{- if not $tag -}}
{{- fail (printf "%s: set %s.tag or %s.digest" .what .what .what) -}}
{{- end -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{- define "celgate.imagePullSecrets" -}}
imagePullSecrets:
{{- range .Values.global.imagePullSecrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Fixed paths inside the gateway container (the Dockerfile keeps the root FS read-only). */}}
{{- define "celgate.paths.config" -}}/etc/celgate/config{{- end -}}
{{- define "celgate.paths.policies" -}}/etc/celgate/policies{{- end -}}
{{- define "celgate.paths.auth" -}}/etc/celgate/auth{{- end -}}
{{- define "celgate.paths.tls" -}}/etc/celgate/tls{{- end -}}
{{- define "celgate.paths.data" -}}/var/lib/celgate{{- end -}}

{{- define "celgate.policiesFromChart" -}}
{{- if or .Values.policies.existingConfigMap .Values.policies.files -}}true{{- end -}}
{{- end -}}

{{- define "celgate.policiesConfigMap" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "celgate.fullname" .)) -}}
{{- end -}}

{{/*
The operator's part of the gateway config: `configFile` when given, else `config`, with each
model's base_url passed through tpl. Returned as YAML.
*/}}
{{- define "celgate.userConfig" -}}
{{- $cfg := dict -}}
{{- if .Values.configFile -}}
{{- $cfg = fromYaml .Values.configFile -}}
{{- if hasKey $cfg "Error" -}}
{{- fail (printf "configFile is not valid YAML: %s" (get $cfg "Error")) -}}
{{- end -}}
{{- else -}}
{{- $cfg = deepCopy .Values.config -}}
{{- end -}}
{{- $models := dict -}}
{{- range $alias, $model := ($cfg.models | default dict) -}}
{{- $m := deepCopy $model -}}
{{- if kindIs "string" $m.base_url -}}
{{- $_ := set $m "base_url" (tpl $m.base_url $) -}}
{{- end -}}
{{- $_ := set $models $alias $m -}}
{{- end -}}
{{- $_ := set $cfg "models" $models -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Aliases of the catalogue's cloud models, sorted, as a comma-separated string. */}}
{{- define "celgate.cloudModels" -}}
{{- $cfg := include "celgate.userConfig" . | fromYaml -}}
{{- $cloud := list -}}
{{- range $alias, $m := $cfg.models -}}
{{- if eq (toString $m.location) "cloud" -}}
{{- $cloud = append $cloud $alias -}}
{{- end -}}
{{- end -}}
{{- $cloud | sortAlpha | join ", " -}}
{{- end -}}

{{/* Environment variables that hold provider keys (each model's api_key_env), sorted. */}}
{{- define "celgate.keyEnvs" -}}
{{- $cfg := include "celgate.userConfig" . | fromYaml -}}
{{- $envs := dict -}}
{{- range $alias, $m := $cfg.models -}}
{{- if $m.api_key_env -}}
{{- $_ := set $envs (toString $m.api_key_env) $alias -}}
{{- end -}}
{{- end -}}
{{- keys $envs | sortAlpha | join "," -}}
{{- end -}}

{{/* The complete celgate.yaml: the operator's part plus what the chart owns. */}}
{{- define "celgate.config" -}}
{{- $cfg := include "celgate.userConfig" . | fromYaml -}}
{{- $server := deepCopy ($cfg.server | default dict) -}}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) -}}
{{- $_ := unset $server "tls" -}}
{{- $_ := unset $server "health_listen" -}}
{{- if .Values.tls.existingSecret -}}
{{- $tls := dict "cert_file" (printf "%s/%s" (include "celgate.paths.tls" .) .Values.tls.certKey) "key_file" (printf "%s/%s" (include "celgate.paths.tls" .) .Values.tls.keyKey) -}}
{{- if eq .Values.auth.mode "mtls" -}}
{{- $_ := set $tls "client_ca_file" (printf "%s/%s" (include "celgate.paths.tls" .) .Values.tls.caKey) -}}
{{- end -}}
{{- $_ := set $server "tls" $tls -}}
{{- $_ := set $server "health_listen" (printf "0.0.0.0:%d" (int .Values.healthPort)) -}}
{{- end -}}
{{- $_ := set $cfg "server" $server -}}
{{- $telemetry := deepCopy ($cfg.telemetry | default dict) -}}
{{- $_ := unset $telemetry "prometheus" -}}
{{- if .Values.telemetry.prometheus.enabled -}}
{{- $_ := set $telemetry "prometheus" (dict "listen" (printf "0.0.0.0:%d" (int .Values.telemetry.prometheus.port))) -}}
{{- end -}}
{{- if $telemetry -}}
{{- $_ := set $cfg "telemetry" $telemetry -}}
{{- end -}}
{{- $_ := unset $cfg "http" -}}
{{- if .Values.http.enabled -}}
{{- $_ := set $cfg "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.http.containerPort))) -}}
{{- end -}}
{{- $auth := dict "mode" .Values.auth.mode -}}
{{- if eq .Values.auth.mode "api_key" -}}
{{- $_ := set $auth "api_keys_file" (printf "%s/%s" (include "celgate.paths.auth" .) .Values.auth.apiKeys.key) -}}
{{- else -}}
{{- $_ := set $auth "client_tenants" .Values.auth.clientTenants -}}
{{- end -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- $policyDir := .Values.policies.bundledDir -}}
{{- if include "celgate.policiesFromChart" . -}}
{{- $policyDir = include "celgate.paths.policies" . -}}
{{- end -}}
{{- $_ := set $cfg "policy" (dict "dir" $policyDir "watch" true) -}}
{{- $ledger := dict "backend" .Values.ledger.backend "reservation_ttl_s" .Values.ledger.reservationTtlSeconds -}}
{{- if eq .Values.ledger.backend "redis" -}}
{{- if .Values.ledger.redis.existingSecret -}}
{{- $_ := set $ledger "url_env" "CELGATE_REDIS_URL" -}}
{{- else -}}
{{- $_ := set $ledger "url" .Values.ledger.redis.url -}}
{{- end -}}
{{- /* Settlements Redis could not take wait here (the /tmp emptyDir outlives container restarts). */ -}}
{{- $_ := set $ledger "journal_path" "/tmp/celgate/ledger-journal.sqlite3" -}}
{{- else -}}
{{- $_ := set $ledger "path" (printf "%s/ledger.sqlite3" (include "celgate.paths.data" .)) -}}
{{- end -}}
{{- $_ := set $cfg "ledger" $ledger -}}
{{- $_ := set $cfg "airgapped" (.Values.global.airgapped | default false) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Seconds the gateway drains after SIGTERM, rounded up. */}}
{{- define "celgate.graceSeconds" -}}
{{- $cfg := include "celgate.userConfig" . | fromYaml -}}
{{- $grace := 20.0 -}}
{{- if and $cfg.server (hasKey $cfg.server "grace_period_s") -}}
{{- $grace = $cfg.server.grace_period_s | float64 -}}
{{- end -}}
{{- ceil $grace | int -}}
{{- end -}}

{{/*
A NetworkPolicy peer from two label maps. Both empty: every pod of the release's namespace.
Both set: pods matching podSelector in namespaces matching namespaceSelector.
*/}}
{{- define "celgate.peer" -}}
{{- $peer := dict -}}
{{- with .namespaceSelector -}}
{{- $_ := set $peer "namespaceSelector" (dict "matchLabels" .) -}}
{{- end -}}
{{- with .podSelector -}}
{{- $_ := set $peer "podSelector" (dict "matchLabels" .) -}}
{{- end -}}
{{- if not $peer -}}
{{- $_ := set $peer "podSelector" (dict) -}}
{{- end -}}
{{- toYaml (list $peer) -}}
{{- end -}}

{{/*
Checks across values that a schema cannot express. Each failure says what to change.
*/}}
{{- define "celgate.validate" -}}
{{- $airgapped := .Values.global.airgapped -}}
{{- $cloud := include "celgate.cloudModels" . -}}
{{- if and $airgapped $cloud -}}
{{- fail (printf "global.airgapped is true but the model catalogue has cloud models (location: cloud): %s. An air-gapped gateway may only use on_prem models: remove them from config.models (or configFile), or set global.airgapped=false." $cloud) -}}
{{- end -}}
{{- if and $airgapped (not .Values.global.imageRegistry) -}}
{{- fail "global.airgapped is true but global.imageRegistry is empty: set it to the registry that mirrors the celgate and Ollama images (see docs/kubernetes.md, \"Mirror the images\")." -}}
{{- end -}}
{{- if and $airgapped (not .Values.networkPolicy.enabled) -}}
{{- fail "global.airgapped is true but networkPolicy.enabled is false: the NetworkPolicy is what keeps traffic inside the cluster; set networkPolicy.enabled=true." -}}
{{- end -}}
{{- if and $airgapped .Values.networkPolicy.egress.cloud.cidrs -}}
{{- fail (printf "global.airgapped is true but networkPolicy.egress.cloud.cidrs allows %s: an air-gapped gateway has no cloud egress; empty the list." (join ", " .Values.networkPolicy.egress.cloud.cidrs)) -}}
{{- end -}}
{{- if and $cloud .Values.networkPolicy.enabled (not .Values.networkPolicy.egress.cloud.cidrs) -}}
{{- fail (printf "the catalogue has cloud models (%s) but networkPolicy.egress.cloud.cidrs is empty, so the NetworkPolicy would block every call to them: list the providers' CIDRs (or your egress proxy's) in networkPolicy.egress.cloud.cidrs." $cloud) -}}
{{- end -}}
{{- $sqlite := eq .Values.ledger.backend "sqlite" -}}
{{- if and $sqlite (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "ledger.backend=sqlite with replicaCount=%d: the SQLite ledger is a file on one pod's volume, so each replica would keep its own budget and tenants could overspend %d-fold. Set ledger.backend=redis with ledger.redis.url, or replicaCount=1." (int .Values.replicaCount) (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and $sqlite .Values.autoscaling.enabled -}}
{{- fail "ledger.backend=sqlite with autoscaling.enabled=true: the SQLite ledger is a file on one pod's volume, so every extra replica would keep its own budget and tenants could overspend. Set ledger.backend=redis with ledger.redis.url, or autoscaling.enabled=false." -}}
{{- end -}}
{{- if eq .Values.ledger.backend "redis" -}}
{{- if and .Values.ledger.redis.url .Values.ledger.redis.existingSecret -}}
{{- fail "ledger.redis: set url or existingSecret, not both." -}}
{{- end -}}
{{- if not (or .Values.ledger.redis.url .Values.ledger.redis.existingSecret) -}}
{{- fail "ledger.backend=redis needs ledger.redis.url (for example redis://redis-master.redis.svc:6379/0), or ledger.redis.existingSecret holding the URL when it carries a password." -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/]*@" .Values.ledger.redis.url -}}
{{- fail "ledger.redis.url holds credentials (user:password@): rendered manifests must never hold secrets; use a Redis reachable without a password in the URL, restricted by the NetworkPolicy." -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) .Values.autoscaling.enabled -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail "autoscaling.enabled=true needs a target: set autoscaling.targetCPUUtilizationPercentage and/or autoscaling.targetMemoryUtilizationPercentage above 0." -}}
{{- end -}}
{{- $keyEnvs := include "celgate.keyEnvs" . -}}
{{- if and $keyEnvs (not .Values.providerKeys.existingSecret) -}}
{{- fail (printf "models read API keys from %s but providerKeys.existingSecret is empty: create a Secret holding those keys and name it in providerKeys.existingSecret (keys are never taken from values)." (replace "," ", " $keyEnvs)) -}}
{{- end -}}
{{- if and (eq .Values.auth.mode "api_key") (not .Values.auth.apiKeys.existingSecret) -}}
{{- fail "auth.mode=api_key needs auth.apiKeys.existingSecret: a Secret whose key auth.apiKeys.key holds `TENANT SHA256HEX` lines." -}}
{{- end -}}
{{- if eq .Values.auth.mode "mtls" -}}
{{- if not .Values.tls.existingSecret -}}
{{- fail "auth.mode=mtls needs tls.existingSecret: a kubernetes.io/tls Secret with the server certificate and, under tls.caKey, the CA that signs client certificates." -}}
{{- end -}}
{{- if not .Values.auth.clientTenants -}}
{{- fail "auth.mode=mtls needs auth.clientTenants: certificate subject CN or SAN -> tenant." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.policies.existingConfigMap .Values.policies.files -}}
{{- fail "set either policies.files or policies.existingConfigMap, not both." -}}
{{- end -}}
{{- if and .Values.ollama.modelsImage.enabled (not .Values.ollama.enabled) -}}
{{- fail "ollama.modelsImage.enabled needs ollama.enabled=true." -}}
{{- end -}}
{{- if .Values.global.requireDigests -}}
{{- $unpinned := list -}}
{{- if not .Values.image.digest -}}{{- $unpinned = append $unpinned "image.digest" -}}{{- end -}}
{{- if and .Values.ollama.enabled (not .Values.ollama.image.digest) -}}{{- $unpinned = append $unpinned "ollama.image.digest" -}}{{- end -}}
{{- if and .Values.ollama.enabled .Values.ollama.modelsImage.enabled (not .Values.ollama.modelsImage.digest) -}}{{- $unpinned = append $unpinned "ollama.modelsImage.digest" -}}{{- end -}}
{{- if $unpinned -}}
{{- fail (printf "global.requireDigests is true but %s is empty: pin every mirrored image by its digest (skopeo inspect --format '{{.Digest}}' docker://MIRROR/REPOSITORY:TAG prints it; see docs/kubernetes.md, \"Mirror the images\"), or set global.requireDigests=false." (join ", " $unpinned)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.telemetry.prometheus.enabled (or (eq (int .Values.telemetry.prometheus.port) (int .Values.containerPort)) (and .Values.tls.existingSecret (eq (int .Values.telemetry.prometheus.port) (int .Values.healthPort)))) -}}
{{- fail (printf "telemetry.prometheus.port %d is already the gateway's gRPC or health port: choose another (default 9464)." (int .Values.telemetry.prometheus.port)) -}}
{{- end -}}
{{- if and .Values.telemetry.prometheus.serviceMonitor.enabled (not .Values.telemetry.prometheus.enabled) -}}
{{- fail "telemetry.prometheus.serviceMonitor.enabled needs telemetry.prometheus.enabled=true (the ServiceMonitor scrapes its port)." -}}
{{- end -}}
{{- if and $airgapped .Values.ollama.enabled (not .Values.ollama.persistence.existingClaim) (not .Values.ollama.modelsImage.enabled) -}}
{{- fail "global.airgapped is true and the in-cluster Ollama has no source of models: set ollama.modelsImage (an image in your registry holding the model files) or ollama.persistence.existingClaim (a volume that already holds them)." -}}
{{- end -}}
{{- end -}}
