package exporter

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metrics: an Exporter reports what it does through the OpenTelemetry
// metric API, on the Config.MeterProvider (a no-op one by default). Each
// instance reports its own work: the exports it accepted, the runs it held
// and how they ended, the bytes it stored, and its queue.
//
//	exporter.exports.started   counter    {export}  runs this instance began: exports it accepted, attempts of durable exports it claimed
//	exporter.exports.ended     counter    {export}  runs this instance held that ended; attribute status
//	exporter.export.duration   histogram  s         from start to end of those runs; attribute status
//	exporter.bytes.stored      counter    By        export bytes this instance stored
//	exporter.exports.pending   gauge      {export}  exports waiting here for a run slot
//	exporter.exports.running   gauge      {export}  exports this instance is copying
//
// The status attribute is "completed", "failed" or "cancelled". A run
// counts as cancelled however the cancel reached it, from this instance or
// another; as failed when its source, the store or Shutdown ended it, or
// when its lease lapsed; an attempt of a durable export that is retried or
// handed back counts as failed here, and the attempt that resumes it as a
// run of its own. Every run that was started ends exactly once, so started
// minus ended is what the instance holds.

// MeterName is the instrumentation scope of the Exporter's metrics.
const MeterName = "github.com/exporterkit/exporter"

// Attribute key and values of the ended counter and the duration histogram.
const statusKey = "status"

var (
	attrCompleted = metric.WithAttributeSet(attribute.NewSet(attribute.String(statusKey, string(StatusCompleted))))
	attrFailed    = metric.WithAttributeSet(attribute.NewSet(attribute.String(statusKey, string(StatusFailed))))
	attrCancelled = metric.WithAttributeSet(attribute.NewSet(attribute.String(statusKey, string(StatusCancelled))))
)

// instruments are the Exporter's metric instruments.
type instruments struct {
	started  metric.Int64Counter
	ended    metric.Int64Counter
	duration metric.Float64Histogram
	stored   metric.Int64Counter
	gauges   metric.Registration // pending and running; unregistered by Shutdown
	tally    tally               // the same counts, for the instance's report (instance.go)
}

// newInstruments creates the instruments on mp (nil: no-op). The gauges
// call counts when the reader collects.
func newInstruments(mp metric.MeterProvider, counts func() (pending, held int)) (*instruments, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(MeterName)
	var ins instruments
	var errs [7]error
	ins.started, errs[0] = m.Int64Counter("exporter.exports.started",
		metric.WithUnit("{export}"), metric.WithDescription("Runs this instance began: exports accepted by StartExport, attempts of durable exports it claimed."))
	ins.ended, errs[1] = m.Int64Counter("exporter.exports.ended",
		metric.WithUnit("{export}"), metric.WithDescription("Exports run by this instance that ended, by final status."))
	ins.duration, errs[2] = m.Float64Histogram("exporter.export.duration",
		metric.WithUnit("s"), metric.WithDescription("Time from StartExport to the end of exports run by this instance, by final status."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
	ins.stored, errs[3] = m.Int64Counter("exporter.bytes.stored",
		metric.WithUnit("By"), metric.WithDescription("Export bytes stored by this instance."))
	pending, err := m.Int64ObservableGauge("exporter.exports.pending",
		metric.WithUnit("{export}"), metric.WithDescription("Exports accepted by this instance that wait for a run slot."))
	errs[4] = err
	running, err := m.Int64ObservableGauge("exporter.exports.running",
		metric.WithUnit("{export}"), metric.WithDescription("Exports this instance is copying."))
	errs[5] = err
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	ins.gauges, errs[6] = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		queued, held := counts()
		o.ObserveInt64(pending, int64(queued))
		o.ObserveInt64(running, int64(held-queued))
		return nil
	}, pending, running)
	if errs[6] != nil {
		return nil, errs[6]
	}
	return &ins, nil
}

// recordBegin counts the start of a run.
func (ins *instruments) recordBegin(ctx context.Context) {
	ins.started.Add(ctx, 1)
	ins.tally.began.Add(1)
}

// recordEnd counts the end of a run that started at start with status s
// (a failure's code: Job.ErrorCode). ctx is the run's: done by now, but
// its values (a trace) may be used.
func (ins *instruments) recordEnd(ctx context.Context, s Status, code string, start time.Time) {
	ins.tally.end(s, code)
	var attrs metric.MeasurementOption
	switch s {
	case StatusCompleted:
		attrs = attrCompleted
	case StatusCancelled:
		attrs = attrCancelled
	default:
		attrs = attrFailed
	}
	ins.ended.Add(ctx, 1, attrs)
	ins.duration.Record(ctx, time.Since(start).Seconds(), attrs)
}

// countStored counts the bytes of chunks, which a store write just stored.
func (e *Exporter) countStored(ctx context.Context, chunks [][]byte) {
	var n int
	for _, c := range chunks {
		n += len(c)
	}
	if n > 0 {
		e.ins.stored.Add(ctx, int64(n))
		e.ins.tally.stored.Add(int64(n))
	}
}

// unregisterGauges stops the gauges' callback, so that the MeterProvider
// no longer holds the Exporter. Shutdown calls it; repeating it is harmless.
func (e *Exporter) unregisterGauges() {
	if err := e.ins.gauges.Unregister(); err != nil {
		e.log.Debug("unregistering the metric callback failed", "err", err)
	}
}
