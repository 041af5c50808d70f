{{/* Names, labels and shared pod pieces of the sgx-quote-helper chart. */}}

{{- define "sqh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sqh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sqh.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sqh.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sqh.image" -}}
{{- if eq .Values.sgx.epcResource "sgx.intel.com/epc" -}}
{{- fail "sgx.epcResource: sgx.intel.com/epc counts bytes as node capacity (devicePlugin.publishEpcCapacity), not device-plugin MiB; use kubernetes.azure.com/sgx_epc_mem_in_MiB or another per-MiB name" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "quote-helper") */}}
{{- define "sqh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sqh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sqh.labels" -}}
{{ include "sqh.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Values.managedBy | default .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* where the SIMULATED PKI Secret is mounted (PCCS, and the quote helper's init container) */}}
{{- define "sqh.simulatedPkiDir" -}}
/etc/sgx-quote-helper/simulated-pki
{{- end -}}

{{/* "true" when the QGS runs inside the quote helper's pod (qgs.enabled, qgs.mode=combined), else "" */}}
{{- define "sqh.qgsCombined" -}}
{{- if not (has .Values.qgs.mode (list "separate" "combined")) -}}
{{- fail (printf "qgs.mode: %q is neither separate (its own DaemonSet) nor combined (in the quote helper's process)" .Values.qgs.mode) -}}
{{- end -}}
{{- if and .Values.qgs.enabled (eq .Values.qgs.mode "combined") -}}
{{- if not .Values.quoteHelper.enabled -}}
{{- fail "qgs.mode=combined runs the QGS in the quote helper's pod: it needs quoteHelper.enabled=true (or qgs.mode=separate)" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* the quote helper's image: the DCAP image (deploy/Dockerfile.dcap) for the dcap and auto engines,
     and in combined mode for the QGS's tdx and auto engines */}}
{{- define "sqh.quoteHelperImage" -}}
{{- $image := include "sqh.image" . -}}
{{- if or (has .Values.quoteHelper.engine (list "dcap" "auto")) (and (include "sqh.qgsCombined" .) (has .Values.qgs.engine (list "tdx" "auto"))) -}}
{{- printf "%s%s" $image .Values.image.dcapTagSuffix -}}
{{- else -}}
{{- $image -}}
{{- end -}}
{{- end -}}

{{/* the socket path every client uses */}}
{{- define "sqh.socketPath" -}}
{{- printf "%s/%s" (.Values.quoteHelper.socketDir | trimSuffix "/") .Values.quoteHelper.socketName -}}
{{- end -}}

{{/* locked-down container securityContext; "root" true where hostPath dirs owned by root are written */}}
{{- define "sqh.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- if .root }}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
{{- else }}
runAsUser: 65532
runAsGroup: 65532
runAsNonRoot: true
{{- end }}
{{- end -}}

{{- define "sqh.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* nodeSelector of everything that runs on SGX nodes */}}
{{- define "sqh.nodeSelector" -}}
nodeSelector:
  {{- toYaml (merge (deepCopy .Values.sgxNodeSelector) (dict "kubernetes.io/os" "linux" "kubernetes.io/arch" "amd64")) | nindent 2 }}
{{- end -}}

{{/* the init container that makes a node's simulated platform under the shared SIMULATED PKI
     (simulatedPki), once, in the state hostPath mounted as volume "state":
     (dict "root" $ "image" IMAGE "resources" RESOURCES) */}}
{{- define "sqh.joinPkiInit" -}}
- name: join-simulated-pki
  image: {{ .image }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args:
    - sim
    - init
    - --state-dir=/var/lib/sgx-quote-helper
    - --pki-from={{ include "sqh.simulatedPkiDir" .root }}
    - --keep-existing
  securityContext:
    {{- include "sqh.containerSecurity" (dict "root" true) | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    - name: state
      mountPath: /var/lib/sgx-quote-helper
    - name: simulated-pki
      mountPath: {{ include "sqh.simulatedPkiDir" .root }}
      readOnly: true
{{- end -}}

{{/* the QGS's image: the DCAP image (Intel's libsgx-tdx-logic) for the tdx and auto engines */}}
{{- define "sqh.qgsImage" -}}
{{- $image := include "sqh.image" . -}}
{{- if has .Values.qgs.engine (list "tdx" "auto") -}}
{{- printf "%s%s" $image .Values.image.dcapTagSuffix -}}
{{- else -}}
{{- $image -}}
{{- end -}}
{{- end -}}

{{/* Intel's quote provider library configuration (sgx_default_qcnl.conf) from quoteHelper.qcnl */}}
{{- define "sqh.qcnlConf" -}}
{{- $q := .Values.quoteHelper.qcnl -}}
{{- dict "pccs_url" $q.pccsUrl "use_secure_cert" $q.useSecureCert "collateral_service" $q.collateralService "pccs_api_version" $q.pccsApiVersion "retry_times" $q.retryTimes "retry_delay" $q.retryDelay | toPrettyJson }}
{{- end -}}
