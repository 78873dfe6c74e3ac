{{- define "shortener-operator.name" -}}
shortener-operator
{{- end -}}

{{- define "shortener-operator.labels" -}}
app.kubernetes.io/name: shortener-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shortener-operator.selectorLabels" -}}
app.kubernetes.io/name: shortener-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shortener-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
