{{/* Labels of every object: the same as the kustomize base's, plus Helm's own. */}}
{{- define "ner-triton.labels" -}}
app.kubernetes.io/name: ner-triton
app.kubernetes.io/part-of: ner
app.kubernetes.io/component: inference-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ner-triton.selector" -}}
app.kubernetes.io/name: ner-triton
{{- end -}}

{{- define "ner-triton.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
