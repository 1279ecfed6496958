{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "atp-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name prefix of every object. Truncated to 63 characters (DNS label limit); when
the release name already contains the chart name it is used alone.
*/}}
{{- define "atp-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "atp-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that identify the release's objects: the base of every selector.
*/}}
{{- define "atp-worker.baseLabels" -}}
app.kubernetes.io/name: {{ include "atp-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Descriptive labels of every object (never in selectors).
*/}}
{{- define "atp-worker.metaLabels" -}}
helm.sh/chart: {{ include "atp-worker.chart" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: atp
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "atp-worker.labels" -}}
{{ include "atp-worker.baseLabels" . }}
{{ include "atp-worker.metaLabels" . }}
{{- end }}

{{/*
Selector labels shared by every worker of the release (all pools): what the Services select.
*/}}
{{- define "atp-worker.selectorLabels" -}}
{{ include "atp-worker.baseLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Selector labels of one pool's workers. Argument: dict "root" $ "pool" <effective pool values>.
*/}}
{{- define "atp-worker.poolSelectorLabels" -}}
{{ include "atp-worker.selectorLabels" .root }}
atp/pool: {{ .pool.name }}
{{- end }}

{{/*
Name of the objects of one pool (Deployment, PDB, HPA, ConfigMap).
Argument: dict "root" $ "pool" <pool values>.
*/}}
{{- define "atp-worker.poolFullname" -}}
{{- printf "%s-%s" (include "atp-worker.fullname" .root | trunc 42 | trimSuffix "-") .pool.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the ServiceAccount the workers run as.
*/}}
{{- define "atp-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "atp-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Deep merge of two maps where the second always wins, also with false, 0, "" and null (Sprig's
mergeOverwrite keeps the first map's value when the second holds such an "empty" value, which
would make `gpu: {enabled: false}` in a pool a no-op). Maps merge key by key; lists and scalars
replace. Argument: dict "dst" <map> "src" <map>. Returns YAML.
*/}}
{{- define "atp-worker.deepMerge" -}}
{{- $out := deepCopy .dst }}
{{- range $key, $value := .src }}
{{- $old := get $out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $old) }}
{{- $_ := set $out $key (include "atp-worker.deepMerge" (dict "dst" $old "src" $value) | fromYaml) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The pool settings that an entry of `pools` may override (keep in sync with values.schema.json).
*/}}
{{- define "atp-worker.poolKeys" -}}
replicaCount image gpu resources nodeSelector tolerations affinity topologySpreadConstraints priorityClassName runtimeClassName podAnnotations podLabels worker extraEnv autoscaling podDisruptionBudget
{{- end }}

{{/*
Effective values of every pool: the top-level pool settings deep-merged with the pool's entry.
Fails on duplicate pool names. Argument: the root context. Returns YAML `{pools: [...]}`.
*/}}
{{- define "atp-worker.pools" -}}
{{- $root := . }}
{{- $defaults := dict }}
{{- range (include "atp-worker.poolKeys" . | splitList " ") }}
{{- $_ := set $defaults . (get $root.Values . | deepCopy) }}
{{- end }}
{{- $pools := list }}
{{- $seen := dict }}
{{- range .Values.pools }}
{{- if hasKey $seen .name }}
{{- fail (printf "pools: the name %q appears twice; each pool needs a unique name" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $pools = append $pools (include "atp-worker.deepMerge" (dict "dst" $defaults "src" .) | fromYaml) }}
{{- end }}
{{- if not $pools }}
{{- fail "pools: at least one pool is needed" }}
{{- end }}
{{- toYaml (dict "pools" $pools) }}
{{- end }}

{{/*
Image reference of a pool: the CPU-only variant (tag + image.cpuTagSuffix) when the pool has no GPU.
Argument: dict "root" $ "pool" <pool values>.
*/}}
{{- define "atp-worker.image" -}}
{{- $tag := default .root.Chart.AppVersion .pool.image.tag | toString }}
{{- if not .pool.gpu.enabled }}
{{- $tag = printf "%s%s" $tag .pool.image.cpuTagSuffix }}
{{- end }}
{{- printf "%s:%s" .pool.image.repository $tag }}
{{- end }}

{{/*
Mount paths of the Secrets the worker reads.
*/}}
{{- define "atp-worker.tlsDir" -}}/etc/atp/tls{{- end }}
{{- define "atp-worker.clientCaDir" -}}/etc/atp/client-ca{{- end }}
{{- define "atp-worker.authDir" -}}/etc/atp/auth{{- end }}
{{- define "atp-worker.configDir" -}}/etc/atp/config{{- end }}

{{/*
Names of the worker's grpc.health.v1 services (fixed by the worker): "" is liveness,
"atp.v1.Worker" readiness.
*/}}
{{- define "atp-worker.livenessService" -}}{{- end }}
{{- define "atp-worker.readinessService" -}}atp.v1.Worker{{- end }}

{{/*
Validates the release-wide values the schema cannot check alone.
*/}}
{{- define "atp-worker.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled is true but tls.existingSecret is empty: name the Secret holding the server certificate and key" }}
{{- end }}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth.enabled needs tls.enabled: mutual TLS runs on top of TLS" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- fail "auth.enabled is true but auth.existingSecret is empty: name the Secret holding the bearer token" }}
{{- end }}
{{- $ports := list .Values.ports.grpc .Values.ports.health .Values.ports.metrics | uniq }}
{{- if ne (len $ports) 3 }}
{{- fail (printf "ports: grpc (%v), health (%v) and metrics (%v) must differ" .Values.ports.grpc .Values.ports.health .Values.ports.metrics) }}
{{- end }}
{{- end }}

{{/*
The worker's flagfile for one pool: one `--flag=value` per line. Argument: dict "root" $ "pool" <pool values>.
*/}}
{{- define "atp-worker.flagfile" -}}
{{- $v := .root.Values }}
{{- $w := .pool.worker }}
{{- $host := $v.listenHost }}
--listen={{ $host }}:{{ $v.ports.grpc | int }}
--health-listen={{ $host }}:{{ $v.ports.health | int }}
--metrics-listen={{ $host }}:{{ $v.ports.metrics | int }}
--backend={{ ternary $w.backend "cpu" (.pool.gpu.enabled | default false) }}
{{- if .pool.gpu.enabled }}
--device={{ $w.device | int }}
{{- end }}
--log-format={{ $w.logFormat }}
--log-level={{ $w.logLevel }}
--chunk-bytes={{ $w.chunkBytes | int64 }}
--drain-timeout={{ $w.drainTimeoutSeconds | int }}s
{{- range $flag, $key := dict "threads" "threads" "max-tensor-bytes" "maxTensorBytes" "max-sequence-length" "maxSequenceLength" "max-rank" "maxRank" "max-inflight-requests" "maxInflightRequests" "max-inflight-per-stream" "maxInflightPerStream" "max-queue-depth" "maxQueueDepth" "max-inflight-bytes" "maxInflightBytes" "max-resident-layer-bytes" "maxResidentLayerBytes" }}
{{- $value := get $w $key }}
{{- if and (hasKey $w $key) (not (kindIs "invalid" $value)) }}
--{{ $flag }}={{ $value | int64 }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
--tls-cert={{ include "atp-worker.tlsDir" $ }}/{{ $v.tls.certKey }}
--tls-key={{ include "atp-worker.tlsDir" $ }}/{{ $v.tls.keyKey }}
{{- if $v.tls.clientAuth.enabled }}
--tls-client-ca={{ include "atp-worker.clientCaDir" $ }}/{{ $v.tls.clientAuth.caKey }}
{{- end }}
{{- end }}
{{- if $v.auth.enabled }}
--token-file={{ include "atp-worker.authDir" $ }}/{{ $v.auth.tokenKey }}
{{- end }}
{{- end }}

{{/*
Checksum of the Secrets the worker mounts, read from the cluster at install/upgrade time
(`lookup`; empty under `helm template`): rotating a certificate or token and running
`helm upgrade` rolls the pods.
*/}}
{{- define "atp-worker.secretsChecksum" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- if .Values.tls.enabled }}
{{- $names = append $names .Values.tls.existingSecret }}
{{- if .Values.tls.clientAuth.enabled }}
{{- $names = append $names (default .Values.tls.existingSecret .Values.tls.clientAuth.existingSecret) }}
{{- end }}
{{- end }}
{{- if .Values.auth.enabled }}
{{- $names = append $names .Values.auth.existingSecret }}
{{- end }}
{{- $data := dict }}
{{- range $names | uniq }}
{{- $secret := lookup "v1" "Secret" $ns . }}
{{- $_ := set $data . (($secret).data | default dict) }}
{{- end }}
{{- toJson (dict "names" $names "data" $data) | sha256sum }}
{{- end }}

{{/*
Port the `helm test` pod checks: the TLS/plain gRPC port, or the plaintext health port under
mutual TLS (`atp health` carries no client certificate).
*/}}
{{- define "atp-worker.testPort" -}}
{{- if and .Values.tls.enabled .Values.tls.clientAuth.enabled }}
{{- .Values.ports.health | int }}
{{- else }}
{{- .Values.ports.grpc | int }}
{{- end }}
{{- end }}
