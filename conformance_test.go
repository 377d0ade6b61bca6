package exporter_test

import (
	"testing"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/storetest"
)

// TestStoreConformance runs the Store conformance suite on RedisStore, on
// miniredis, a standalone Redis server and a 3-master Redis Cluster.
func TestStoreConformance(t *testing.T) {
	for _, backend := range exporter.TestBackends {
		t.Run(backend, func(t *testing.T) {
			var elapse func(time.Duration)
			storetest.Run(t, storetest.Harness{
				New: func(t *testing.T) exporter.Store {
					s, el := exporter.NewTestStore(t, backend)
					elapse = el
					return s
				},
				Elapse: func(_ *testing.T, d time.Duration) { elapse(d) },
			})
		})
	}
}
