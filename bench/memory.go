package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

// M1: Go heap per running export.
func (b *bench) m1() *workload {
	n := b.sizes.m1Exports
	const (
		chunk = 64 << 10
		fed   = 96 << 10 // bytes each source delivers before it blocks
		pool  = 64
	)
	return &workload{
		id: "M1",
		desc: fmt.Sprintf("Go heap per running export: %d exports (ChunkSize 64 KiB, MaxRunning %d) whose sources deliver "+
			"96 KiB and block, once every one shows Bytes >= 64 KiB; (HeapInuse after - before) / %d", n, n, n),
		rows: []row{{id: "M1", unit: "bytes", lowerBetter: true, limit: true, target: 2*chunk + 16<<10, prec: 0}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(pool)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{MaxRunning: n, ChunkSize: chunk})
			if err != nil {
				return nil, err
			}
			stopped := false
			defer func() {
				if !stopped {
					shutdown(x, 0)
				}
			}()
			// What does not grow with the number of exports is paid before
			// the first measurement: the background goroutines and the
			// connection pool.
			if err := b.warmExporter(ctx, x, c, pool); err != nil {
				return nil, err
			}
			srcs := make([]*stallSource, n) // the caller's memory, not the exporter's
			for i := range srcs {
				srcs[i] = newStallSource(b.data[:fed])
			}
			ids := make([]string, n)
			before := readMem()
			err = parallel(ctx, b.sizes.concurrency, func(ctx context.Context, g int) error {
				for i := g; i < n; i += b.sizes.concurrency {
					job, err := x.StartExport(ctx, user, srcs[i])
					if err != nil {
						return err
					}
					ids[i] = job.ID
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if err := waitBytes(ctx, x, ids, chunk, b.sizes.concurrency); err != nil {
				return nil, err
			}
			after := readMem()
			stopped = true
			if err := shutdown(x, 100*time.Millisecond); err != nil {
				return nil, err
			}
			fmt.Printf("      per export: heap %d bytes, goroutine stacks %d bytes; goroutines +%d\n",
				(int64(after.heap)-int64(before.heap))/int64(n), (int64(after.stack)-int64(before.stack))/int64(n),
				after.goroutines-before.goroutines)
			return map[string]float64{"M1": float64(int64(after.heap)-int64(before.heap)) / float64(n)}, nil
		},
	}
}

// waitBytes waits until every job of ids shows at least min bytes stored.
func waitBytes(ctx context.Context, x *exporter.Exporter, ids []string, least int64, conc int) error {
	ctx, cancel := context.WithTimeoutCause(ctx, time.Minute, errors.New("exports did not store their first chunk within a minute"))
	defer cancel()
	return parallel(ctx, conc, func(ctx context.Context, g int) error {
		for i := g; i < len(ids); i += conc {
			for {
				job, err := x.GetExportStatus(ctx, user, ids[i])
				if err != nil {
					return err
				}
				if job.Bytes >= least {
					break
				}
				if job.Status.Terminal() {
					return fmt.Errorf("export %s ended %s: %s", job.ID, job.Status, job.Error)
				}
				if err := sleep(ctx, 10*time.Millisecond); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// warmExporter starts the Exporter's background goroutines with one small
// export and opens pool connections on c.
func (b *bench) warmExporter(ctx context.Context, x *exporter.Exporter, c *redis.Client, pool int) error {
	job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:1<<10]))
	if err != nil {
		return err
	}
	if _, err := waitCompleted(ctx, x, job.ID, 1<<10); err != nil {
		return err
	}
	// pool commands that each hold a connection for 50 ms: the pool opens
	// pool connections.
	return parallel(ctx, pool, func(ctx context.Context, _ int) error {
		err := c.Do(ctx, "BLPOP", b.work+"warm", "0.05").Err()
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	})
}

type memStats struct {
	heap, stack uint64
	goroutines  int
}

// readMem collects garbage and reads the heap in use.
func readMem() memStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memStats{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// M2: Redis memory per stored byte.
func (b *bench) m2() *workload {
	size := b.sizes.exportBytes
	measure := func(ctx context.Context, write func(ctx context.Context, c *redis.Client) (string, error)) (map[string]float64, error) {
		// A clean state: the previous side's keys are freed and its
		// connections (and their query buffers) are gone.
		if err := b.waitClients(ctx); err != nil {
			return nil, err
		}
		before, err := b.infoInt(ctx, "memory", "used_memory")
		if err != nil {
			return nil, err
		}
		c := b.client(8)
		key, err := write(ctx, c)
		c.Close()
		if err != nil {
			return nil, err
		}
		if err := b.waitClients(ctx); err != nil {
			return nil, err
		}
		after, err := b.infoInt(ctx, "memory", "used_memory")
		if err != nil {
			return nil, err
		}
		usage, err := b.admin.MemoryUsage(ctx, key, 0).Result()
		if err != nil {
			return nil, err
		}
		fmt.Printf("      used_memory %+d bytes; MEMORY USAGE of the data list %d bytes (%.3f per byte)\n",
			after-before, usage, float64(usage)/float64(size))
		return map[string]float64{"M2": float64(after-before) / float64(size)}, nil
	}
	return &workload{
		id: "M2",
		desc: fmt.Sprintf("Redis used_memory delta after one %d MiB export (default ChunkSize, 64 KiB - 16) / %d MiB; "+
			"raw (for comparison): the same chunks RPUSHed to one list", size>>20, size>>20),
		rows: []row{{id: "M2", unit: "ratio", lowerBetter: true, limit: true, target: 1.05, prec: 3}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			return measure(ctx, func(ctx context.Context, c *redis.Client) (string, error) {
				x, err := b.exporter(c, b.work, exporter.Config{MaxBytes: int64(max(size, exporter.DefaultMaxBytes))})
				if err != nil {
					return "", err
				}
				job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:size]))
				if err == nil {
					_, err = waitCompleted(ctx, x, job.ID, int64(size))
				}
				if err = errors.Join(err, shutdown(x, 10*time.Second)); err != nil {
					return "", err
				}
				return b.findKey(ctx, b.work, job.ID, "list")
			})
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			return measure(ctx, func(ctx context.Context, c *redis.Client) (string, error) {
				key := b.work + "raw:{m2}:data"
				return key, rawPush(ctx, c, key, b.data[:size], exporter.DefaultChunkSize)
			})
		},
	}
}

// M3: Go heap of pending exports.
func (b *bench) m3() *workload {
	n := b.sizes.m3Pending
	const pool = 32
	return &workload{
		id: "M3",
		desc: fmt.Sprintf("Go heap of %d pending exports queued behind one blocked export (MaxRunning 1, MaxPending %d), "+
			"tiny struct sources; HeapInuse after - before", n, n),
		rows: []row{{id: "M3", unit: "MB", lowerBetter: true, limit: true, target: 40, prec: 1}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(pool)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{MaxRunning: 1, MaxPending: n})
			if err != nil {
				return nil, err
			}
			stopped := false
			defer func() {
				if !stopped {
					shutdown(x, 0)
				}
			}()
			if err := b.warmExporter(ctx, x, c, pool); err != nil {
				return nil, err
			}
			blocked := newBlockSource()
			if _, err := x.StartExport(ctx, user, blocked); err != nil {
				return nil, err
			}
			if err := blocked.waitStarted(ctx); err != nil {
				return nil, err
			}
			srcs := make([]tinySource, n) // the caller's memory, not the exporter's
			before := readMem()
			err = parallel(ctx, b.sizes.concurrency, func(ctx context.Context, g int) error {
				for i := g; i < n; i += b.sizes.concurrency {
					srcs[i].from = i
					if _, err := x.StartExport(ctx, user, &srcs[i]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			after := readMem()
			stopped = true
			if err := shutdown(x, 100*time.Millisecond); err != nil {
				return nil, err
			}
			delta := int64(after.heap) - int64(before.heap)
			fmt.Printf("      per pending export: heap %d bytes; goroutines +%d\n", delta/int64(n), after.goroutines-before.goroutines)
			return map[string]float64{"M3": float64(delta) / 1e6}, nil
		},
	}
}
