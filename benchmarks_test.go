package exporter

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Micro-benchmarks of the hot paths on miniredis: the chunking copy and
// its raw go-redis baseline, the job hash codec, and Download reads. They
// show where the client spends its CPU and allocations; how the exporter
// compares with raw Redis commands on a real server is the business of
// the benchmark program (go run ./bench).

// benchExportSize is the size of the exports the benchmarks copy and read.
const benchExportSize = 8 << 20

// benchRedis starts a private miniredis and a client on it, both closed
// when the benchmark ends.
func benchRedis(b *testing.B) (*miniredis.Miniredis, *redis.Client) {
	b.Helper()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		b.Fatalf("miniredis: %v", err)
	}
	b.Cleanup(mr.Close)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	b.Cleanup(func() { c.Close() })
	return mr, c
}

// benchExporter returns an Exporter on c, shut down when the benchmark
// ends (before the client and the miniredis are closed).
func benchExporter(b *testing.B, c redis.UniversalClient, cfg Config) *Exporter {
	b.Helper()
	x, err := New(NewRedisStore(c).WithPrefix("bench:"), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		x.Shutdown(ctx)
	})
	return x
}

// benchExport exports data and waits for its completion.
func benchExport(b *testing.B, x *Exporter, data []byte, opts ...StartOption) *Job {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	job, err := x.StartExport(ctx, alice, bytes.NewReader(data), opts...)
	if err != nil {
		b.Fatal(err)
	}
	job, err = x.WaitExport(ctx, alice, job.ID)
	if err != nil {
		b.Fatal(err)
	}
	if job.Status != StatusCompleted || job.Bytes != int64(len(data)) {
		b.Fatalf("export ended %s with %d bytes (%s), want completed with %d", job.Status, job.Bytes, job.Error, len(data))
	}
	return job
}

// benchDeleteKeys deletes every key of the miniredis, so that the
// iterations of a benchmark do not pile up data.
func benchDeleteKeys(mr *miniredis.Miniredis) {
	for _, k := range mr.Keys() {
		mr.Del(k)
	}
}

// BenchmarkCopy measures one export of 8 MiB in 64 KiB chunks, from
// StartExport until WaitExport returns it completed.
func BenchmarkCopy(b *testing.B) {
	mr, c := benchRedis(b)
	x := benchExporter(b, c, Config{})
	data := randomBytes(benchExportSize)
	b.SetBytes(benchExportSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		benchExport(b, x, data)
		b.StopTimer()
		benchDeleteKeys(mr)
		b.StartTimer()
	}
}

// BenchmarkCopyRawRPush is the baseline of BenchmarkCopy: the same 64 KiB
// chunks RPUSHed with go-redis, 8 per pipeline round trip, then PEXPIRE,
// as the raw side of the benchmark program does.
func BenchmarkCopyRawRPush(b *testing.B) {
	mr, c := benchRedis(b)
	data := randomBytes(benchExportSize)
	ctx := b.Context()
	b.SetBytes(benchExportSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for off := 0; off < len(data); {
			pipe := c.Pipeline()
			for k := 0; k < 8 && off < len(data); k++ {
				end := min(off+DefaultChunkSize, len(data))
				pipe.RPush(ctx, "raw:data", data[off:end])
				off = end
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.PExpire(ctx, "raw:data", DefaultRetention).Err(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		benchDeleteKeys(mr)
		b.StartTimer()
	}
}

// BenchmarkDecodeJob decodes the hash of a completed job with metadata,
// as RedisStore reads it from Redis.
func BenchmarkDecodeJob(b *testing.B) {
	mr, c := benchRedis(b)
	x := benchExporter(b, c, Config{})
	job := benchExport(b, x, randomBytes(1000), WithTotal(1000),
		WithMetadata(map[string]string{"filename": "orders.csv", "type": "text/csv"}))
	// Find the job's hash by looking rather than by rebuilding the key
	// layout, which is the store's business.
	var h map[string]string
	for _, k := range mr.Keys() {
		if strings.Contains(k, job.ID) {
			if t := mr.Type(k); t == "hash" {
				var err error
				if h, err = c.HGetAll(b.Context(), k).Result(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	if h == nil {
		b.Fatalf("no hash of job %s among %q", job.ID, mr.Keys())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := decodeJob(h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeJob encodes a new job with metadata, as Create does.
func BenchmarkEncodeJob(b *testing.B) {
	job := &Job{ID: "0b9d3f5e-6c1a-4f7e-9a43-2f1c8e5d7b60", Owner: alice.ID, Status: StatusPending,
		Total: 1 << 20, ChunkSize: DefaultChunkSize,
		Metadata: map[string]string{"filename": "orders.csv", "type": "text/csv"}}
	b.ReportAllocs()
	for range b.N {
		if _, err := encodeJob(job, DefaultRetention); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownloadRead reads a completed 8 MiB export with OpenExport
// and io.Copy to io.Discard, checksum verification included.
func BenchmarkDownloadRead(b *testing.B) {
	_, c := benchRedis(b)
	x := benchExporter(b, c, Config{})
	job := benchExport(b, x, randomBytes(benchExportSize))
	ctx := b.Context()
	b.SetBytes(benchExportSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d, err := x.OpenExport(ctx, alice, job.ID)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, d)
		d.Close()
		if err != nil || n != benchExportSize {
			b.Fatalf("downloaded %d bytes, %v; want %d", n, err, benchExportSize)
		}
	}
}

// BenchmarkSmallExportMetrics measures 1 KiB exports, where the per-export
// costs show, with metrics off (the default no-op provider) and on (the
// OpenTelemetry SDK with a reader), to show what the instruments cost.
func BenchmarkSmallExportMetrics(b *testing.B) {
	for _, withSDK := range []bool{false, true} {
		name := "noop"
		if withSDK {
			name = "sdk"
		}
		b.Run(name, func(b *testing.B) {
			mr, c := benchRedis(b)
			var cfg Config
			if withSDK {
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				b.Cleanup(func() { mp.Shutdown(context.Background()) })
				cfg.MeterProvider = mp
			}
			x := benchExporter(b, c, cfg)
			data := randomBytes(1 << 10)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				benchExport(b, x, data)
				if i%1000 == 999 {
					b.StopTimer()
					benchDeleteKeys(mr)
					b.StartTimer()
				}
			}
		})
	}
}
