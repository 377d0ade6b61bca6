package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

// retention is the TTL of the raw sides' keys, the exporter's default.
const retention = exporter.DefaultRetention

// rawInFlight is how many commands the raw writes keep in flight: a
// pipeline of this many RPUSHes per round trip.
const rawInFlight = 8

// workloads lists every workload in the order they run.
func (b *bench) workloads() []*workload {
	return []*workload{
		b.w1(),
		b.w2("W2", 64<<10),
		b.w2("W2b-4K", 4<<10),
		b.w2("W2b-16K", 16<<10),
		b.w2("W2b-1M", 1<<20),
		b.w3(),
		b.w4(),
		b.w5(),
		b.w6("W6", 2000, 16<<10),
		b.w6("W6-1M", 200, 1<<20),
		b.w7(),
		b.m1(),
		b.m2(),
		b.m3(),
	}
}

// W1: many small exports, 16 at once.
func (b *bench) w1() *workload {
	s := b.sizes
	return &workload{
		id: "W1",
		desc: fmt.Sprintf("%d exports of %d KiB, %d goroutines; exporter: StartExport then WaitExport (MaxRunning %d); "+
			"raw: one MULTI/EXEC per job (HSET 10 fields, RPUSH, HSET completed, 2 PEXPIRE)",
			s.w1Jobs, s.w1Bytes>>10, s.concurrency, s.concurrency),
		rows: []row{{id: "W1", unit: "jobs/s", target: 0.5, prec: 1}},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(4 * s.concurrency)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{MaxRunning: s.concurrency})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			chunk := b.data[:s.w1Bytes]
			var next atomic.Int64
			// Where a job's time goes, for -v: StartExport, and WaitExport.
			starts, waits := make([][]float64, s.concurrency), make([][]float64, s.concurrency)
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			err = parallel(ctx, s.concurrency, func(ctx context.Context, g int) error {
				for next.Add(1) <= int64(s.w1Jobs) {
					t0 := time.Now()
					job, err := x.StartExport(ctx, user, bytes.NewReader(chunk))
					if err != nil {
						return err
					}
					t1 := time.Now()
					if _, err := waitCompleted(ctx, x, job.ID, int64(len(chunk))); err != nil {
						return err
					}
					starts[g] = append(starts[g], float64(t1.Sub(t0).Microseconds()))
					waits[g] = append(waits[g], float64(time.Since(t1).Microseconds()))
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			d, err := m.stop(ctx)
			if b.opts.verbose {
				st, wt := slices.Concat(starts...), slices.Concat(waits...)
				fmt.Printf("      per job: StartExport p50 %.0f us, p99 %.0f us; WaitExport p50 %.0f us, p99 %.0f us\n",
					percentile(st, 50), percentile(st, 99), percentile(wt, 50), percentile(wt, 99))
			}
			return map[string]float64{"W1": float64(s.w1Jobs) / d.Seconds()}, err
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(4 * s.concurrency)
			defer c.Close()
			chunk := b.data[:s.w1Bytes]
			var next atomic.Int64
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			err := parallel(ctx, s.concurrency, func(ctx context.Context, _ int) error {
				for next.Add(1) <= int64(s.w1Jobs) {
					if err := rawJob(ctx, c, b.work, chunk); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			d, err := m.stop(ctx)
			return map[string]float64{"W1": float64(s.w1Jobs) / d.Seconds()}, err
		},
	}
}

// rawJob writes what a small export writes, by hand, in one MULTI/EXEC:
// the job hash, the chunk, the completion, the TTLs.
func rawJob(ctx context.Context, c *redis.Client, prefix string, chunk []byte) error {
	id := uuid.NewString()
	meta, data := prefix+"raw:{"+id+"}:meta", prefix+"raw:{"+id+"}:data"
	sum := sha256.Sum256(chunk)
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, meta, "id", id, "owner", user.ID, "status", "running", "bytes", "0", "total", "0",
			"chunk", strconv.Itoa(exporter.DefaultChunkSize), "created", now, "updated", now, "started", now,
			"retention", strconv.FormatInt(retention.Milliseconds(), 10))
		p.RPush(ctx, data, chunk)
		p.HSet(ctx, meta, "status", "completed", "bytes", strconv.Itoa(len(chunk)),
			"checksum", "sha256:"+hex.EncodeToString(sum[:]), "finished", now)
		p.PExpire(ctx, meta, retention)
		p.PExpire(ctx, data, retention)
		return nil
	})
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if cmd.Err() != nil {
			return cmd.Err()
		}
	}
	return nil
}

// W2 and W2b: one big export from memory at a given chunk size.
func (b *bench) w2(id string, chunkSize int) *workload {
	size := b.sizes.exportBytes
	rows := []row{{id: id, unit: "MB/s", prec: 1}}
	if id == "W2" || id == "W2b-1M" {
		rows[0].target = 0.9
	}
	return &workload{
		id: id,
		desc: fmt.Sprintf("one %d MiB export, ChunkSize %s; exporter: StartExport until WaitExport says completed; "+
			"raw: RPUSH of the same chunks, %d per pipeline round trip, then PEXPIRE", size>>20, sizeName(chunkSize), rawInFlight),
		rows: rows,
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(16)
			defer c.Close()
			x, err := b.exporter(c, b.work, exporter.Config{ChunkSize: chunkSize, MaxBytes: int64(max(size, exporter.DefaultMaxBytes))})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:size]))
			if err != nil {
				return nil, err
			}
			if _, err := waitCompleted(ctx, x, job.ID, int64(size)); err != nil {
				return nil, err
			}
			d, err := m.stop(ctx)
			return map[string]float64{id: float64(size) / 1e6 / d.Seconds()}, err
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(16)
			defer c.Close()
			key := b.work + "raw:{" + uuid.NewString() + "}:data"
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			if err := rawPush(ctx, c, key, b.data[:size], chunkSize); err != nil {
				return nil, err
			}
			d, err := m.stop(ctx)
			return map[string]float64{id: float64(size) / 1e6 / d.Seconds()}, err
		},
	}
}

// rawPush stores data in list key in chunks of chunkSize, rawInFlight
// RPUSHes per round trip, and sets the key's TTL.
func rawPush(ctx context.Context, c *redis.Client, key string, data []byte, chunkSize int) error {
	for off := 0; off < len(data); {
		pipe := c.Pipeline()
		for k := 0; k < rawInFlight && off < len(data); k++ {
			end := min(off+chunkSize, len(data))
			pipe.RPush(ctx, key, data[off:end])
			off = end
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return c.PExpire(ctx, key, retention).Err()
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// W3: status reads of completed jobs.
func (b *bench) w3() *workload {
	s := b.sizes
	var ids, rawKeys []string
	return &workload{
		id: "W3",
		desc: fmt.Sprintf("%d goroutines for %v reading %d completed jobs round-robin; exporter: GetExportStatus; "+
			"raw: HGETALL of copies of the same job hashes", s.concurrency, s.w3Duration, s.w3Jobs),
		rows: []row{{id: "W3", unit: "ops/s", target: 0.85, prec: 0}},
		prepare: func(ctx context.Context) error {
			c := b.client(s.concurrency)
			defer c.Close()
			x, err := b.exporter(c, b.setup, exporter.Config{MaxRunning: s.concurrency})
			if err != nil {
				return err
			}
			defer shutdown(x, 10*time.Second)
			// Jobs as a service would start them: with a filename and a
			// content type, and a WithTotal for progress.
			ids = make([]string, s.w3Jobs)
			err = parallel(ctx, s.concurrency, func(ctx context.Context, g int) error {
				for i := g; i < len(ids); i += s.concurrency {
					job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:1000+i]),
						exporter.WithTotal(int64(1000+i)),
						exporter.WithMetadata(map[string]string{exporter.MetadataFilename: fmt.Sprintf("orders-%03d.csv", i), exporter.MetadataContentType: "text/csv"}))
					if err != nil {
						return err
					}
					if _, err := waitCompleted(ctx, x, job.ID, int64(1000+i)); err != nil {
						return err
					}
					ids[i] = job.ID
				}
				return nil
			})
			if err != nil {
				return err
			}
			// The raw side reads exact copies of the job hashes.
			fields, size := 0, 0
			for _, id := range ids {
				key, err := b.findKey(ctx, b.setup, id, "hash")
				if err != nil {
					return err
				}
				h, err := b.admin.HGetAll(ctx, key).Result()
				if err != nil {
					return err
				}
				raw := b.setup + "raw:{" + id + "}:meta"
				if err := b.admin.HSet(ctx, raw, h).Err(); err != nil {
					return err
				}
				if err := b.admin.PExpire(ctx, raw, retention).Err(); err != nil {
					return err
				}
				rawKeys = append(rawKeys, raw)
				fields = len(h)
				for k, v := range h {
					size += len(k) + len(v)
				}
			}
			fmt.Printf("  job hashes: %d fields, %d bytes of names and values on average\n", fields, size/len(ids))
			return nil
		},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(2 * s.concurrency)
			defer c.Close()
			x, err := b.exporter(c, b.setup, exporter.Config{})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			return readLoop(ctx, m, s, "W3", func(ctx context.Context, i int) error {
				job, err := x.GetExportStatus(ctx, user, ids[i%len(ids)])
				if err == nil && job.Status != exporter.StatusCompleted {
					err = fmt.Errorf("job %s is %s", job.ID, job.Status)
				}
				return err
			})
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(2 * s.concurrency)
			defer c.Close()
			return readLoop(ctx, m, s, "W3", func(ctx context.Context, i int) error {
				h, err := c.HGetAll(ctx, rawKeys[i%len(rawKeys)]).Result()
				if err == nil && h["status"] != "completed" {
					err = fmt.Errorf("raw job hash %s has status %q", rawKeys[i%len(rawKeys)], h["status"])
				}
				return err
			})
		},
	}
}

// readLoop calls read from s.concurrency goroutines for s.w3Duration,
// goroutine g with g, g+n, g+2n, ..., and returns the calls per second.
func readLoop(ctx context.Context, m *meter, s sizes, id string, read func(ctx context.Context, i int) error) (map[string]float64, error) {
	var ops atomic.Int64
	if err := m.begin(ctx); err != nil {
		return nil, err
	}
	end := time.Now().Add(s.w3Duration)
	err := parallel(ctx, s.concurrency, func(ctx context.Context, g int) error {
		n := int64(0)
		for i := g; time.Now().Before(end); i += s.concurrency {
			if err := read(ctx, i); err != nil {
				return err
			}
			n++
		}
		ops.Add(n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	d, err := m.stop(ctx)
	return map[string]float64{id: float64(ops.Load()) / d.Seconds()}, err
}

// W4: cancel latency across instances.
func (b *bench) w4() *workload {
	n := b.sizes.w4Samples
	const warm = 5 // samples run first and not counted
	rows := []row{
		{id: "W4p50", unit: "us", lowerBetter: true, target: 2, prec: 0},
		{id: "W4p99", unit: "us", lowerBetter: true, target: 2, prec: 0},
	}
	latencies := func(lat []float64) map[string]float64 {
		return map[string]float64{"W4p50": percentile(lat, 50), "W4p99": percentile(lat, 99)}
	}
	return &workload{
		id: "W4",
		desc: fmt.Sprintf("%d cancels; exporter: CancelExport on instance B until the source's Close on instance A "+
			"(own clients); raw: PUBLISH until a SUBSCRIBEd goroutine calls the cancel func; p50 and p99", n),
		rows: rows,
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			ca, cb := b.client(16), b.client(16)
			defer ca.Close()
			defer cb.Close()
			a, err := b.exporter(ca, b.work, exporter.Config{MaxRunning: 64})
			if err != nil {
				return nil, err
			}
			defer shutdown(a, 10*time.Second)
			xb, err := b.exporter(cb, b.work, exporter.Config{})
			if err != nil {
				return nil, err
			}
			defer shutdown(xb, 10*time.Second)
			sample := func(ctx context.Context) (time.Duration, error) {
				src := newBlockSource()
				job, err := a.StartExport(ctx, user, src)
				if err != nil {
					return 0, err
				}
				if err := src.waitStarted(ctx); err != nil {
					return 0, err
				}
				t0 := time.Now()
				if _, err := xb.CancelExport(ctx, user, job.ID); err != nil {
					return 0, err
				}
				if err := src.waitClosed(ctx); err != nil {
					return 0, err
				}
				return src.closedAt.Sub(t0), nil
			}
			// A subscribes to cancels with its first export, in the
			// background: wait for that before the first sample.
			src := newBlockSource()
			if _, err := a.StartExport(ctx, user, src); err != nil {
				return nil, err
			}
			if err := b.waitSubscribed(ctx, b.work); err != nil {
				return nil, err
			}
			src.Close()
			lat, err := samples(ctx, m, warm, n, sample)
			if err != nil {
				return nil, err
			}
			return latencies(lat), nil
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			csub, cpub := b.client(4), b.client(4)
			defer csub.Close()
			defer cpub.Close()
			channel := b.work + "raw-cancel"
			ps := csub.Subscribe(ctx, channel)
			if _, err := ps.Receive(ctx); err != nil { // the confirmation
				ps.Close()
				return nil, err
			}
			var (
				mu      sync.Mutex
				cancels = make(map[string]func())
				done    = make(chan struct{})
			)
			go func() {
				defer close(done)
				for {
					msg, err := ps.ReceiveMessage(context.Background())
					if err != nil {
						return // ps closed
					}
					mu.Lock()
					f := cancels[msg.Payload]
					delete(cancels, msg.Payload)
					mu.Unlock()
					if f != nil {
						f()
					}
				}
			}()
			defer func() { ps.Close(); <-done }()
			sample := func(ctx context.Context) (time.Duration, error) {
				id := uuid.NewString()
				var at time.Time
				called := make(chan struct{})
				mu.Lock()
				cancels[id] = func() { at = time.Now(); close(called) }
				mu.Unlock()
				t0 := time.Now()
				if err := cpub.Publish(ctx, channel, id).Err(); err != nil {
					return 0, err
				}
				if err := waitChan(ctx, called, 10*time.Second, "the cancel func"); err != nil {
					return 0, err
				}
				return at.Sub(t0), nil
			}
			lat, err := samples(ctx, m, warm, n, sample)
			if err != nil {
				return nil, err
			}
			return latencies(lat), nil
		},
	}
}

// samples runs warm uncounted samples, then n counted ones one after the
// other, and returns the counted ones in microseconds.
func samples(ctx context.Context, m *meter, warm, n int, sample func(context.Context) (time.Duration, error)) ([]float64, error) {
	for range warm {
		if _, err := sample(ctx); err != nil {
			return nil, err
		}
	}
	if err := m.begin(ctx); err != nil {
		return nil, err
	}
	lat := make([]float64, 0, n)
	for range n {
		d, err := sample(ctx)
		if err != nil {
			return nil, err
		}
		lat = append(lat, float64(d.Microseconds()))
	}
	_, err := m.stop(ctx)
	return lat, err
}

// waitSubscribed waits until a connection subscribes to a channel under
// prefix: the cancel listener of the only Exporter that started exports.
func (b *bench) waitSubscribed(ctx context.Context, prefix string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		chans, err := b.admin.PubSubChannels(ctx, prefix+"*").Result()
		if err != nil || len(chans) > 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no subscription to a channel under %s after 10s", prefix)
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return err
		}
	}
}

// W5: download of a completed export.
func (b *bench) w5() *workload {
	size := b.sizes.exportBytes
	const batch = 16 // chunks per LRANGE: 1 MiB, as the Download fetches
	var id, dataKey string
	return &workload{
		id: "W5",
		desc: fmt.Sprintf("download of a completed %d MiB export (default ChunkSize, 64 KiB - 16); exporter: OpenExport + io.Copy to io.Discard; "+
			"raw: LRANGE of the same list, %d chunks per call, to the end", size>>20, batch),
		rows: []row{{id: "W5", unit: "MB/s", target: 0.9, prec: 1}},
		prepare: func(ctx context.Context) error {
			c := b.client(4)
			defer c.Close()
			x, err := b.exporter(c, b.setup, exporter.Config{MaxBytes: int64(max(size, exporter.DefaultMaxBytes))})
			if err != nil {
				return err
			}
			defer shutdown(x, 10*time.Second)
			job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:size]))
			if err != nil {
				return err
			}
			if _, err := waitCompleted(ctx, x, job.ID, int64(size)); err != nil {
				return err
			}
			id = job.ID
			if dataKey, err = b.findKey(ctx, b.setup, id, "list"); err != nil {
				return err
			}
			n, err := b.admin.LLen(ctx, dataKey).Result()
			if err != nil {
				return err
			}
			if want := int64((size + exporter.DefaultChunkSize - 1) / exporter.DefaultChunkSize); n != want {
				return fmt.Errorf("list %s holds %d chunks, want %d", dataKey, n, want)
			}
			return nil
		},
		exporter: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(4)
			defer c.Close()
			x, err := b.exporter(c, b.setup, exporter.Config{})
			if err != nil {
				return nil, err
			}
			defer shutdown(x, 10*time.Second)
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			d, err := x.OpenExport(ctx, user, id)
			if err != nil {
				return nil, err
			}
			n, err := io.Copy(io.Discard, d)
			d.Close()
			if err != nil {
				return nil, err
			}
			if n != int64(size) {
				return nil, fmt.Errorf("downloaded %d bytes, want %d", n, size)
			}
			el, err := m.stop(ctx)
			return map[string]float64{"W5": float64(size) / 1e6 / el.Seconds()}, err
		},
		raw: func(ctx context.Context, m *meter) (map[string]float64, error) {
			c := b.client(4)
			defer c.Close()
			if err := m.begin(ctx); err != nil {
				return nil, err
			}
			n := 0
			for first := int64(0); ; first += batch {
				vals, err := c.LRange(ctx, dataKey, first, first+batch-1).Result()
				if err != nil {
					return nil, err
				}
				for _, v := range vals {
					n += len(v)
				}
				if len(vals) < batch {
					break
				}
			}
			if n != size {
				return nil, fmt.Errorf("read %d bytes, want %d", n, size)
			}
			el, err := m.stop(ctx)
			return map[string]float64{"W5": float64(size) / 1e6 / el.Seconds()}, err
		},
	}
}
