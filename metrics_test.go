package exporter

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// meter is an OpenTelemetry SDK MeterProvider with an in-memory reader.
type meter struct {
	provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

func newMeter(t *testing.T) *meter {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(context.Background())) })
	return &meter{provider: mp, reader: r}
}

// collect returns the metrics of MeterName as they are now.
func (m *meter) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, m.reader.Collect(context.Background(), &rm))
	got := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != MeterName {
			continue
		}
		for _, m := range sm.Metrics {
			got[m.Name] = m
		}
	}
	return got
}

// value returns the int64 counter or gauge name with exactly the given
// attributes (none: the point without attributes), 0 if it has no point.
func (m *meter) value(t *testing.T, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	want := attribute.NewSet(attrs...)
	var points []metricdata.DataPoint[int64]
	switch d := m.collect(t)[name].Data.(type) {
	case metricdata.Sum[int64]:
		require.True(t, d.IsMonotonic, "%s is not a counter", name)
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	case nil:
		return 0
	default:
		t.Fatalf("%s has data of type %T", name, d)
	}
	for _, p := range points {
		if p.Attributes.Equals(&want) {
			return p.Value
		}
	}
	return 0
}

// durations returns how many durations the histogram holds for status.
func (m *meter) durations(t *testing.T, status Status) uint64 {
	t.Helper()
	d, ok := m.collect(t)["exporter.export.duration"].Data.(metricdata.Histogram[float64])
	if !ok {
		return 0
	}
	want := attribute.NewSet(attribute.String("status", string(status)))
	for _, p := range d.DataPoints {
		if p.Attributes.Equals(&want) {
			require.Positive(t, p.Sum, "durations of %s", status)
			return p.Count
		}
	}
	return 0
}

func ended(s Status) attribute.KeyValue { return attribute.String("status", string(s)) }

// deafStore is a Store whose subscriptions never deliver an event, as if
// every event were lost on the way: the Exporter must learn of a cancel
// from its store reads alone.
type deafStore struct{ Store }

func (deafStore) Subscribe(ctx context.Context) (Subscription, error) { return deafSub{}, nil }

type deafSub struct{}

func (deafSub) Receive(ctx context.Context, _ time.Duration) (Event, error) {
	<-ctx.Done()
	return Event{}, ctx.Err()
}
func (deafSub) Close() error { return nil }

func TestMetrics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, env *env) {
		m := newMeter(t)
		x := env.exporter(t, Config{MeterProvider: m.provider, MaxRunning: 1})
		other := env.secondExporter(t, Config{})
		ctx := testCtx(t)

		// A completed export: started, ended completed, its bytes stored.
		data := randomBytes(3*DefaultChunkSize + 100)
		job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
		require.NoError(t, err)
		waitFor(t, x, alice, job.ID, StatusCompleted)
		require.Eventually(t, func() bool { return m.value(t, "exporter.exports.ended", ended(StatusCompleted)) == 1 },
			5*time.Second, 5*time.Millisecond)
		require.Equal(t, int64(1), m.value(t, "exporter.exports.started"))
		require.Equal(t, int64(len(data)), m.value(t, "exporter.bytes.stored"))
		require.Equal(t, uint64(1), m.durations(t, StatusCompleted))

		// One running export holds the only run slot; two wait behind it.
		running := newFeedSource([]byte("first bytes"))
		first, err := x.StartExport(ctx, alice, running)
		require.NoError(t, err)
		waitStatus(t, x, alice, first.ID, StatusRunning)
		queued := make([]*Job, 2)
		for i := range queued {
			queued[i], err = x.StartExport(ctx, bob, newFeedSource(nil))
			require.NoError(t, err)
		}
		require.Equal(t, int64(1), m.value(t, "exporter.exports.running"))
		require.Equal(t, int64(2), m.value(t, "exporter.exports.pending"))

		// Cancels from another instance reach the pending ones and the
		// running one; each counts as cancelled here, where it ran.
		_, err = other.CancelExport(ctx, bob, queued[0].ID)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return m.value(t, "exporter.exports.pending") == 1 },
			5*time.Second, 5*time.Millisecond)
		_, err = other.CancelExport(ctx, alice, first.ID)
		require.NoError(t, err)
		running.requireClosedOnce(t)

		// The second pending one runs once the cancelled run has left the
		// slot; a local cancel counts as well. Then an export whose source
		// fails counts as failed.
		waitStatus(t, x, bob, queued[1].ID, StatusRunning)
		require.Eventually(t, func() bool { return m.value(t, "exporter.exports.running") == 1 },
			5*time.Second, 5*time.Millisecond)
		_, err = x.CancelExport(ctx, bob, queued[1].ID)
		require.NoError(t, err)
		failing, err := x.StartExport(ctx, alice, &failingReader{err: errors.New("disk on fire")})
		require.NoError(t, err)
		require.Equal(t, StatusFailed, waitFor(t, x, alice, failing.ID, StatusFailed).Status)

		require.Eventually(t, func() bool {
			return m.value(t, "exporter.exports.ended", ended(StatusFailed)) == 1 &&
				m.value(t, "exporter.exports.ended", ended(StatusCancelled)) == 3
		}, 5*time.Second, 5*time.Millisecond)
		require.Equal(t, int64(5), m.value(t, "exporter.exports.started"))
		require.Equal(t, int64(1), m.value(t, "exporter.exports.ended", ended(StatusCompleted)))
		require.Equal(t, int64(len(data)), m.value(t, "exporter.bytes.stored"),
			"the cancelled export never filled a chunk, so it stored nothing")
		require.Equal(t, uint64(3), m.durations(t, StatusCancelled))
		require.Equal(t, uint64(1), m.durations(t, StatusFailed))
		require.Equal(t, int64(0), m.value(t, "exporter.exports.running"))
		require.Equal(t, int64(0), m.value(t, "exporter.exports.pending"))
	})
}

// failingReader returns err at once.
type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

// A cancel whose event never arrives is found by the lease renewal; the
// run still counts as cancelled, not as failed.
func TestMetricsCancelWithoutEvent(t *testing.T) {
	env := newEnv(t, "redis")
	m := newMeter(t)
	x := env.exporterOn(t, deafStore{env.store}, Config{MeterProvider: m.provider, LeaseTTL: 300 * time.Millisecond})
	ctx := testCtx(t)
	src := newFeedSource([]byte("some"))
	job, err := x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	_, err = env.secondExporter(t, Config{}).CancelExport(ctx, alice, job.ID)
	require.NoError(t, err)
	src.requireClosedOnce(t)
	require.Eventually(t, func() bool { return m.value(t, "exporter.exports.ended", ended(StatusCancelled)) == 1 },
		5*time.Second, 5*time.Millisecond)
	require.Zero(t, m.value(t, "exporter.exports.ended", ended(StatusFailed)))
}

// A run whose lease is taken from it (here: deleted, as a lapse would)
// counts as failed.
func TestMetricsLeaseLost(t *testing.T) {
	env := newEnv(t, "redis")
	m := newMeter(t)
	x := env.exporter(t, Config{MeterProvider: m.provider, LeaseTTL: 300 * time.Millisecond})
	ctx := testCtx(t)
	src := newFeedSource([]byte("some"))
	job, err := x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	require.NoError(t, env.client.Del(ctx, env.store.keys(job.ID)[2]).Err())
	src.requireClosedOnce(t)
	require.Eventually(t, func() bool { return m.value(t, "exporter.exports.ended", ended(StatusFailed)) == 1 },
		5*time.Second, 5*time.Millisecond)
	require.Zero(t, m.value(t, "exporter.exports.ended", ended(StatusCancelled)))
}

// Every log record about an export names the job and its owner.
func TestLogRecordsCarryJobAndOwner(t *testing.T) {
	env := newEnv(t, "miniredis")
	h := newRecordingHandler()
	x := env.exporter(t, Config{Logger: slog.New(h)})
	ctx := testCtx(t)

	done, err := x.StartExport(ctx, alice, bytes.NewReader([]byte("a,b\n1,2\n")))
	require.NoError(t, err)
	failed, err := x.StartExport(ctx, bob, &failingReader{err: errors.New("boom")})
	require.NoError(t, err)
	cancelled, err := x.StartExport(ctx, alice, newFeedSource(nil))
	require.NoError(t, err)
	waitFor(t, x, alice, done.ID, StatusCompleted)
	waitFor(t, x, bob, failed.ID, StatusFailed)
	_, err = x.CancelExport(ctx, alice, cancelled.ID)
	require.NoError(t, err)

	owners := map[string]string{done.ID: "alice", failed.ID: "bob", cancelled.ID: "alice"}
	want := map[string]bool{"export started": false, "export completed": false, "export failed": false, "export cancelled": false}
	require.Eventually(t, func() bool {
		for _, r := range h.snapshot() {
			if _, ok := want[r.msg]; ok {
				want[r.msg] = true
			}
		}
		return want["export started"] && want["export completed"] && want["export failed"] && want["export cancelled"]
	}, 5*time.Second, 5*time.Millisecond, "records seen: %v", want)
	for _, r := range h.snapshot() {
		if strings.Contains(r.msg, "maxmemory-policy") {
			continue // the eviction check's, about the instance (miniredis has no CONFIG)
		}
		require.Contains(t, owners, r.attrs["job"], "record without a job of the test: %+v", r)
		require.Equal(t, owners[r.attrs["job"]], r.attrs["owner"], "record %+v", r)
	}
}
