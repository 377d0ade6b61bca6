package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

// A durable export's rows: fixed width, so that a Source can start at any
// byte offset (row offset/rowWidth, then offset%rowWidth bytes into it).
const (
	durableRows = 100_000
	rowWidth    = 40
)

func durableRow(i int64) string {
	return fmt.Sprintf("%09d,a row of a durable export....\n", i)
}

// offsets records the offsets a Source was opened at.
type offsets struct {
	mu   sync.Mutex
	seen []int64
}

func (o *offsets) add(n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, n)
}

func (o *offsets) last() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[len(o.seen)-1]
}

// durableSource is the Source of the kind "report": the rows from offset
// on, at 4 MiB/s.
func durableSource(seen *offsets) exporter.Source {
	return func(ctx context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
		seen.add(offset)
		pr, pw := io.Pipe()
		go func() { // ends when the export closes the reader
			skip := offset % rowWidth // the first row starts inside
			var b strings.Builder
			for i := offset / rowWidth; i < durableRows; i++ {
				b.WriteString(durableRow(i))
				if b.Len() >= 32<<10 || i == durableRows-1 {
					if _, err := io.WriteString(pw, b.String()[skip:]); err != nil {
						return
					}
					b.Reset()
					skip = 0
				}
			}
			pw.Close()
		}()
		return &throttled{r: pr, rate: 4 << 20}, nil
	}
}

// resumeElsewhere enqueues a durable export on instance C, shuts C down
// while the export runs (C hands it back), and lets instance D, started
// afterwards, resume it where C stopped. The result is checked against
// the sha256 of every row.
func resumeElsewhere(ctx context.Context, newClient func() *redis.Client, prefix string, user exporter.User) error {
	seen := &offsets{}
	cfg := exporter.Config{Retention: 10 * time.Minute,
		Sources: map[string]exporter.Source{"report": durableSource(seen)}}
	clientC, clientD := newClient(), newClient()
	defer clientC.Close()
	defer clientD.Close()
	c, err := exporter.New(exporter.NewRedisStore(clientC).WithPrefix(prefix), cfg)
	if err != nil {
		return err
	}
	job, err := c.Enqueue(ctx, user, "report", []byte(`{"year":2026}`),
		exporter.WithTotal(durableRows*rowWidth),
		exporter.WithMetadata(map[string]string{exporter.MetadataFilename: "report.csv"}))
	if err != nil {
		return err
	}
	fmt.Printf("export 3: a durable export of kind %q (%s), job %s\n", job.Kind, mib(job.Total), job.ID)
	for job.Bytes < 1<<20 {
		time.Sleep(20 * time.Millisecond)
		if job, err = c.GetExportStatus(ctx, user, job.ID); err != nil {
			return err
		}
	}
	// A deploy: C stops before the export is done and hands it back.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_ = c.Shutdown(sctx) // the deadline passes: the export is handed back
	job, err = c.GetExportStatus(ctx, user, job.ID)
	if err != nil {
		return err
	}
	fmt.Printf("  instance C shut down with %s stored; the export reads %s\n", mib(job.Bytes), job.Status)

	d, err := exporter.New(exporter.NewRedisStore(clientD).WithPrefix(prefix), cfg)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(sctx)
	}()
	wctx, cancelWait := context.WithTimeout(ctx, time.Minute)
	defer cancelWait()
	job, err = d.WaitExport(wctx, user, job.ID)
	if err != nil {
		return err
	}
	if job.Status != exporter.StatusCompleted {
		return fmt.Errorf("export 3 ended %s: %v", job.Status, job.Err())
	}
	fmt.Printf("  instance D resumed it at offset %d (attempt %d) and completed it\n", seen.last(), job.Attempt)

	want := sha256.New()
	for i := range int64(durableRows) {
		io.WriteString(want, durableRow(i))
	}
	sum := "sha256:" + hex.EncodeToString(want.Sum(nil))
	dl, err := d.OpenExport(ctx, user, job.ID)
	if err != nil {
		return err
	}
	defer dl.Close()
	got := sha256.New()
	if _, err := io.Copy(got, dl); err != nil {
		return err
	}
	if job.Checksum != sum || "sha256:"+hex.EncodeToString(got.Sum(nil)) != sum {
		return fmt.Errorf("export 3: Job.Checksum %s, downloaded %x, rows %s", job.Checksum, got.Sum(nil), sum)
	}
	fmt.Printf("  %s: %s, the same as an uninterrupted run\n", job.Metadata[exporter.MetadataFilename], sum[:7+16]+"...")
	return nil
}
