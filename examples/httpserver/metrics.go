package main

import (
	"fmt"
	"net/http"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The service gives its Exporter an OpenTelemetry MeterProvider and serves
// what it collects at GET /metrics, as JSON, so that a person can watch the
// counters move. A real service passes the MeterProvider of its OTLP or
// Prometheus exporter instead, and serves nothing of the sort.

// metricPoint is one data point: a counter's or gauge's value, or a
// histogram's count and sum, with its attributes.
type metricPoint struct {
	Attributes map[string]string `json:"attributes,omitempty"`
	Value      *int64            `json:"value,omitempty"`
	Count      *uint64           `json:"count,omitempty"`
	Sum        *float64          `json:"sum,omitempty"`
}

// metricsHandler serves the metrics reader holds as
// {"<instrument>": [points...]}, in the order of the attributes.
func metricsHandler(reader sdkmetric.Reader) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(r.Context(), &rm); err != nil {
			writeProblem(w, http.StatusServiceUnavailable, "unavailable", "metrics unavailable: "+err.Error())
			return
		}
		out := map[string][]metricPoint{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				out[m.Name] = points(m.Data)
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// points converts the data of one instrument; kinds the Exporter does not
// use are left out.
func points(data metricdata.Aggregation) []metricPoint {
	var ps []metricPoint
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			ps = append(ps, metricPoint{Attributes: attrs(p.Attributes.ToSlice()), Value: &p.Value})
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			ps = append(ps, metricPoint{Attributes: attrs(p.Attributes.ToSlice()), Value: &p.Value})
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			ps = append(ps, metricPoint{Attributes: attrs(p.Attributes.ToSlice()), Count: &p.Count, Sum: &p.Sum})
		}
	}
	sort.Slice(ps, func(i, j int) bool { return fmt.Sprint(ps[i].Attributes) < fmt.Sprint(ps[j].Attributes) })
	return ps
}

// attrs returns the attributes of a point as strings.
func attrs(kvs []attribute.KeyValue) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}
