{{- define "wms-model.labels" -}}
app.kubernetes.io/name: wms-model
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
wms/model-version: {{ .Values.model.version | quote }}
{{- end -}}

{{- define "wms-model.selector" -}}
app.kubernetes.io/name: wms-model
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
