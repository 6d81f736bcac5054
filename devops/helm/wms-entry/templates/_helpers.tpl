{{- define "wms-entry.labels" -}}
app.kubernetes.io/name: wms-entry
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
wms/upstream-version: {{ .Values.upstream.version | quote }}
{{- end -}}

{{- define "wms-entry.selector" -}}
app.kubernetes.io/name: wms-entry
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
