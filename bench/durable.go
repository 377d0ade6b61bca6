package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/exporterkit/exporter"
)

// W6: durable exports against StartExport's, both sides exporter.
func (b *bench) w6() *workload {
	s := b.sizes
	jobs := func(ctx context.Context, m *meter, do func(ctx context.Context) error) (map[string]float64, error) {
		var next atomic.Int64
		if err := m.begin(ctx); err != nil {
			return nil, err
		}
		err := parallel(ctx, s.concurrency, func(ctx context.Context, _ int) error {
			for next.Add(1) <= int64(s.w1Jobs) {
				if err := do(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		d, err := m.stop(ctx)
		return map[string]float64{"W6": float64(s.w1Jobs) / d.Seconds()}, err
	}
	return &workload{
		id: "W6",
		desc: fmt.Sprintf("%d durable exports of %d KiB enqueued on one instance and run by two (MaxRunning %d each), %d goroutines "+
			"enqueueing and waiting; baseline: the same exports with StartExport on one instance (MaxRunning %d), as W1",
			s.w1Jobs, s.w1Bytes>>10, s.concurrency/2, s.concurrency, s.concurrency),
		rows: []row{{id: "W6", unit: "jobs/s", target: 0.8, prec: 1}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			chunk := b.data[:s.w1Bytes]
			src := func(context.Context, *exporter.Job, int64) (io.Reader, error) { return bytes.NewReader(chunk), nil }
			cfg := exporter.Config{MaxRunning: s.concurrency / 2, Sources: map[string]exporter.Source{"bench": src}}
			c1, c2 := b.client(4*s.concurrency), b.client(4*s.concurrency)
			defer c1.Close()
			defer c2.Close()
			x, err := b.exporter(c1, b.work, cfg)
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			y, err := b.exporter(c2, b.work, cfg)
			if err != nil {
				return nil, err
			}
			defer shutdown(y, 10*time.Second)
			return jobs(ctx, m, func(ctx context.Context) error {
				job, err := x.Enqueue(ctx, user, "bench", nil)
				if err != nil {
					return err
				}
				_, err = waitCompleted(ctx, x, job.ID, int64(len(chunk)))
				return err
			})
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			chunk := b.data[:s.w1Bytes]
			c := b.client(4 * s.concurrency)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{MaxRunning: s.concurrency})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			return jobs(ctx, m, func(ctx context.Context) error {
				job, err := x.StartExport(ctx, user, bytes.NewReader(chunk))
				if err != nil {
					return err
				}
				_, err = waitCompleted(ctx, x, job.ID, int64(len(chunk)))
				return err
			})
		},
	}
}
