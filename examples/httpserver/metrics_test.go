package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/exporterkit/exporter"
)

// TestMetrics: GET /metrics shows the Exporter's OpenTelemetry metrics as
// they move: exports started, ended by status, bytes stored.
func TestMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { meters.Shutdown(context.Background()) })
	in := newInstance(t, 0, exporter.Config{MeterProvider: meters})
	in.svc.mux.Handle("GET /metrics", metricsHandler(reader)) // as main does

	type points map[string][]metricPoint
	read := func() points {
		t.Helper()
		r := in.call(t, "GET", "/metrics", "", "")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		var ps points
		require.NoError(t, json.Unmarshal(r.body, &ps), "%s", r.body)
		return ps
	}
	value := func(ps points, name string, attrs map[string]string) int64 {
		for _, p := range ps[name] {
			if maps.Equal(p.Attributes, attrs) && p.Value != nil {
				return *p.Value
			}
		}
		return 0
	}

	job := in.start(t, "alice", fmt.Sprintf(`{"kind": %q, "args": {"rows": 2000}}`, csvKind))
	done := in.waitStatus(t, "alice", job.ID, exporter.StatusCompleted)

	var ps points
	require.Eventually(t, func() bool {
		ps = read()
		return value(ps, "exporter.exports.ended", map[string]string{"status": "completed"}) == 1
	}, 5*time.Second, 10*time.Millisecond, "metrics: %v", ps)
	require.Equal(t, int64(1), value(ps, "exporter.exports.started", nil))
	require.Equal(t, done.Bytes, value(ps, "exporter.bytes.stored", nil))
	require.Equal(t, int64(0), value(ps, "exporter.exports.running", nil))
	durations := ps["exporter.export.duration"]
	require.Len(t, durations, 1)
	require.Equal(t, uint64(1), *durations[0].Count)
}
