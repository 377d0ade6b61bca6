package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

// W6: durable exports against StartExport's, both sides exporter: jobs
// exports of size bytes. W6 (2000 of 16 KiB, the issue's) measures the
// cost per export; W6-1M (1 MiB each) what it weighs beside the bytes.
func (b *bench) w6(id string, jobs, size int) *workload {
	s := b.sizes
	if s.w1Jobs < 2000 { // -quick
		jobs = max(jobs*s.w1Jobs/2000, 10)
	}
	run := func(ctx context.Context, m *meter, do func(ctx context.Context) error) (map[string]float64, error) {
		var next atomic.Int64
		if err := m.begin(ctx); err != nil {
			return nil, err
		}
		err := parallel(ctx, s.concurrency, func(ctx context.Context, _ int) error {
			for next.Add(1) <= int64(jobs) {
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
		return map[string]float64{id: float64(jobs) / d.Seconds()}, err
	}
	return &workload{
		id: id,
		desc: fmt.Sprintf("%d durable exports of %d KiB enqueued on one instance and run by two (MaxRunning %d each), %d goroutines "+
			"enqueueing and waiting; baseline: the same exports with StartExport on one instance (MaxRunning %d), as W1",
			jobs, size>>10, s.concurrency/2, s.concurrency, s.concurrency),
		rows: []row{{id: id, unit: "jobs/s", target: 0.8, prec: 1}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			chunk := b.data[:size]
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
			return run(ctx, m, func(ctx context.Context) error {
				job, err := x.Enqueue(ctx, user, "bench", nil)
				if err != nil {
					return err
				}
				_, err = waitCompleted(ctx, x, job.ID, int64(len(chunk)))
				return err
			})
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			chunk := b.data[:size]
			c := b.client(4 * s.concurrency)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{MaxRunning: s.concurrency})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			return run(ctx, m, func(ctx context.Context) error {
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

// W7: resume latency. A worker process (this program, run again with
// w7WorkerEnv) runs a durable export and is SIGKILLed; the time from the
// kill to the first byte the resuming instance stores.

// w7WorkerEnv makes this program a W7 worker: "<addr> <prefix>".
const w7WorkerEnv = "EXPORTER_BENCH_W7_WORKER"

// w7Lease is the LeaseTTL of W7's instances; w7Kills the kills per
// repetition.
const (
	w7Lease = time.Second
	w7Kills = 4
)

// w7Source is the kind "w7": fast from any offset, or a chunk every 5 ms
// in the worker (so that the kill finds it running).
func w7Source(paced bool) exporter.Source {
	return func(ctx context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
		r := io.LimitReader(zeros{}, 64<<20-offset)
		if paced {
			return &pacedZeros{r: r, ctx: ctx}, nil
		}
		return r, nil
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type pacedZeros struct {
	r   io.Reader
	ctx context.Context
}

func (p *pacedZeros) Read(b []byte) (int, error) {
	select {
	case <-time.After(5 * time.Millisecond):
	case <-p.ctx.Done():
		return 0, context.Cause(p.ctx)
	}
	return p.r.Read(b[:min(len(b), 64<<10)])
}

// w7Worker runs one paced durable export, prints its id once it has
// stored a chunk, and waits to be killed.
func w7Worker(arg string) {
	addr, prefix, _ := strings.Cut(arg, " ")
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	x, err := exporter.New(exporter.NewRedisStore(c).WithPrefix(prefix), exporter.Config{LeaseTTL: w7Lease,
		Sources: map[string]exporter.Source{"w7": w7Source(true)}})
	if err != nil {
		fatalf("W7 worker: %v", err)
	}
	ctx := context.Background()
	job, err := x.Enqueue(ctx, user, "w7", nil)
	if err != nil {
		fatalf("W7 worker: %v", err)
	}
	for job.Bytes == 0 {
		time.Sleep(2 * time.Millisecond)
		if job, err = x.GetExportStatus(ctx, user, job.ID); err != nil {
			fatalf("W7 worker: %v", err)
		}
	}
	fmt.Println(job.ID)
	select {} // until SIGKILL
}

func (b *bench) w7() *workload {
	return &workload{
		id: "W7",
		desc: fmt.Sprintf("resume latency: a worker process running a durable export is SIGKILLed (%d times per repetition); "+
			"time from the kill to the first byte stored by the resuming instance (LeaseTTL %v); p50 and p99 (the slowest) of each repetition",
			w7Kills, w7Lease),
		rows: []row{
			{id: "W7 p50", unit: "ms", lowerBetter: true, limit: true, target: float64((w7Lease + time.Second).Milliseconds()), prec: 0},
			{id: "W7 p99", unit: "ms", lowerBetter: true, limit: true, target: float64((w7Lease + time.Second).Milliseconds()), prec: 0},
		},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(16)
			defer c.Close()
			var lat []float64
			for range w7Kills {
				d, err := b.w7Kill(ctx, c)
				if err != nil {
					return nil, err
				}
				lat = append(lat, float64(d.Milliseconds()))
			}
			return map[string]float64{"W7 p50": percentile(lat, 50), "W7 p99": percentile(lat, 99)}, nil
		},
	}
}

// w7Kill starts a worker, kills it once its export stored bytes, and
// waits until another instance, started at the kill (before it, it would
// claim the worker's export first), stores more of it.
func (b *bench) w7Kill(ctx context.Context, c *redis.Client) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), w7WorkerEnv+"="+b.addr+" "+b.work)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("W7 worker: %w", err)
	}
	id := strings.TrimSpace(line)
	if err := cmd.Process.Kill(); err != nil {
		return 0, err
	}
	killed := time.Now()
	cmd.Wait()
	y, err := b.exporter(c, b.work, exporter.Config{LeaseTTL: w7Lease,
		Sources: map[string]exporter.Source{"w7": w7Source(false)}})
	if err != nil {
		return 0, err
	}
	defer shutdown(y, 10*time.Second)
	job, err := y.GetExportStatus(ctx, user, id)
	if err != nil {
		return 0, err
	}
	stored := job.Bytes
	for job.Bytes <= stored {
		if time.Since(killed) > time.Minute {
			return 0, fmt.Errorf("W7: export %s not resumed a minute after the kill", id)
		}
		time.Sleep(time.Millisecond)
		if job, err = y.GetExportStatus(ctx, user, id); err != nil {
			return 0, err
		}
	}
	took := time.Since(killed)
	if _, err := y.CancelExport(ctx, user, id); err != nil && !errors.Is(err, exporter.ErrFinished) {
		return 0, err
	}
	return took, nil
}
