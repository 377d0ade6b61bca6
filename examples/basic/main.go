// Command basic shows the exporter end to end: an export of generated CSV
// rows with progress, its download checked against its checksum, an
// endless export cancelled from a second instance, and a durable export
// that one instance hands back when it shuts down and another resumes.
//
// With REDIS_URL set (for example redis://localhost:6379/0) it uses that
// Redis, under the key prefix "exporter-example:"; without it, it starts
// an embedded miniredis.
//
//	go run ./examples/basic
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}

func run(ctx context.Context) error {
	newClient, prefix, closeRedis, err := connect()
	if err != nil {
		return err
	}
	defer closeRedis()

	// Two Exporters, each with its own client, stand for two instances of
	// a service that share one Redis.
	cfg := exporter.Config{Retention: 10 * time.Minute}
	clientA, clientB := newClient(), newClient()
	defer clientA.Close()
	defer clientB.Close()
	a, err := exporter.New(exporter.NewRedisStore(clientA).WithPrefix(prefix), cfg)
	if err != nil {
		return err
	}
	b, err := exporter.New(exporter.NewRedisStore(clientB).WithPrefix(prefix), cfg)
	if err != nil {
		return err
	}
	user := exporter.User{ID: "alice", Permissions: []string{exporter.DefaultPermission}}

	runErr := errors.Join(exportRows(ctx, a, user), cancelElsewhere(ctx, a, b, user),
		resumeElsewhere(ctx, newClient, prefix, user))

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(runErr, a.Shutdown(sctx), b.Shutdown(sctx))
}

// connect returns a way to make clients of the Redis to use and the key
// prefix to use in it.
func connect() (newClient func() *redis.Client, prefix string, closeRedis func(), err error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		if _, err := redis.ParseURL(url); err != nil {
			return nil, "", nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		newClient = func() *redis.Client {
			opt, _ := redis.ParseURL(url) // checked above
			// Calls return by their ctx deadline (see the package doc).
			opt.ContextTimeoutEnabled = true
			return redis.NewClient(opt)
		}
		fmt.Println("using the Redis at REDIS_URL, key prefix exporter-example:")
		return newClient, "exporter-example:", func() {}, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, "", nil, err
	}
	fmt.Println("no REDIS_URL: using an embedded miniredis at", mr.Addr())
	newClient = func() *redis.Client {
		return redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	}
	return newClient, exporter.DefaultPrefix, mr.Close, nil
}

// exportRows exports about 7.6 MiB of generated CSV at 4 MiB/s, shows its
// progress, then downloads it and checks it.
func exportRows(ctx context.Context, exp *exporter.Exporter, user exporter.User) error {
	const rows = 160_000 // of 50 bytes
	gen := newRowGenerator(rows)
	start := time.Now()
	job, err := exp.StartExport(ctx, user, &throttled{r: gen, rate: 4 << 20},
		exporter.WithTotal(gen.size()),
		exporter.WithMetadata(map[string]string{exporter.MetadataFilename: "orders.csv", exporter.MetadataContentType: "text/csv"}))
	if err != nil {
		return err
	}
	fmt.Printf("export 1: %d CSV rows (%s), job %s\n", rows, mib(gen.size()), job.ID)

	// WaitExport ends the loop; GetExportStatus shows the progress.
	type result struct {
		job *exporter.Job
		err error
	}
	done := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		j, err := exp.WaitExport(wctx, user, job.ID)
		done <- result{j, err}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	printProgress(job)
	for waiting := true; waiting; {
		select {
		case res := <-done:
			if res.err != nil {
				return res.err
			}
			job, waiting = res.job, false
		case <-tick.C:
			j, err := exp.GetExportStatus(ctx, user, job.ID)
			if err != nil {
				return err
			}
			printProgress(j)
		}
	}
	printProgress(job)
	if job.Status != exporter.StatusCompleted {
		return fmt.Errorf("export 1 ended %s: %v", job.Status, job.Err())
	}
	fmt.Printf("  took %v\n", time.Since(start).Round(10*time.Millisecond))

	// The generator has returned io.EOF before the job could complete.
	<-gen.done
	generated := "sha256:" + hex.EncodeToString(gen.sum.Sum(nil))

	d, err := exp.OpenExport(ctx, user, job.ID)
	if err != nil {
		return err
	}
	defer d.Close()
	h := sha256.New()
	n, err := io.Copy(h, d) // a sequential read: the Download verifies the checksum too
	if err != nil {
		return err
	}
	downloaded := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if n != gen.size() || downloaded != generated || job.Checksum != generated {
		return fmt.Errorf("export 1: downloaded %d bytes %s; generated %d bytes %s; Job.Checksum %s",
			n, downloaded, gen.size(), generated, job.Checksum)
	}
	fmt.Printf("  downloaded %s of %s: %s, matches the generated bytes and Job.Checksum\n",
		mib(n), d.Job().Metadata[exporter.MetadataFilename], downloaded[:7+16]+"...")
	return nil
}

func printProgress(j *exporter.Job) {
	fmt.Printf("  %-9s %8s / %s %4.0f%%\n", j.Status, mib(j.Read), mib(j.Total), 100*j.Progress())
}

// mib writes n in binary (IEC) units, as exportctl and the example page do.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// cancelElsewhere starts an export of a source that never ends on a and
// cancels it through b, which does not run it.
func cancelElsewhere(ctx context.Context, a, b *exporter.Exporter, user exporter.User) error {
	pr, pw := io.Pipe()
	src := &closeNotifier{ReadCloser: pr, closed: make(chan time.Time, 1)}
	fed := make(chan error, 1)
	go func() {
		// One row every 10 ms, until the exporter closes the reader.
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(pw, "%d,still going\n", i); err != nil {
				fed <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	job, err := a.StartExport(ctx, user, src)
	if err != nil {
		return err // StartExport closed the source, which ends the feeding goroutine
	}
	fmt.Printf("export 2: an endless source on instance A, job %s\n", job.ID)

	// Wait until A runs it.
	for job.Status == exporter.StatusPending {
		time.Sleep(20 * time.Millisecond)
		if job, err = b.GetExportStatus(ctx, user, job.ID); err != nil {
			return err
		}
	}
	fmt.Printf("  instance B sees it %s; B cancels it\n", job.Status)

	cancelled := time.Now()
	if job, err = b.CancelExport(ctx, user, job.ID); err != nil {
		return err
	}
	select {
	case at := <-src.closed:
		fmt.Printf("  instance A closed the source %v after the cancel\n", at.Sub(cancelled).Round(100*time.Microsecond))
	case <-time.After(5 * time.Second):
		return errors.New("export 2: the source was not closed within 5s of the cancel")
	}
	if err := <-fed; !errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("export 2: the source's writer failed with %v, want io.ErrClosedPipe", err)
	}

	job, err = a.GetExportStatus(ctx, user, job.ID)
	if err != nil {
		return err
	}
	if job.Status != exporter.StatusCancelled {
		return fmt.Errorf("export 2: status %s after the cancel", job.Status)
	}
	_, err = a.OpenExport(ctx, user, job.ID)
	if !errors.Is(err, exporter.ErrNotReady) {
		return fmt.Errorf("export 2: OpenExport after the cancel: %v, want ErrNotReady", err)
	}
	fmt.Printf("  status %s (%s); OpenExport: not ready\n", job.Status, job.Error)
	return nil
}

// rowGenerator produces CSV rows of a fixed width on demand, so its size
// is known up front and nothing is held in memory. It hashes what it
// produces and closes done once it has returned io.EOF.
type rowGenerator struct {
	rows, next int
	buf        []byte // the unread rest of the current row
	sum        hash.Hash
	done       chan struct{}
	once       sync.Once
}

const csvHeader = "order_id,day,customer,amount\n"

func newRowGenerator(rows int) *rowGenerator {
	return &rowGenerator{rows: rows, buf: []byte(csvHeader), sum: sha256.New(), done: make(chan struct{})}
}

func row(i int) []byte {
	return fmt.Appendf(nil, "%09d,2025-%02d-%02d,customer-%06d,%9d.%02d\n",
		i, 1+i%12, 1+i%28, i*7919%1_000_000, i*104729%100_000_000, i%100)
}

func (g *rowGenerator) size() int64 {
	return int64(len(csvHeader)) + int64(g.rows)*int64(len(row(0)))
}

func (g *rowGenerator) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(g.buf) == 0 {
			if g.next == g.rows {
				break
			}
			g.buf = row(g.next)
			g.next++
		}
		m := copy(p[n:], g.buf)
		g.buf = g.buf[m:]
		n += m
	}
	g.sum.Write(p[:n])
	if n == 0 {
		g.once.Do(func() { close(g.done) })
		return 0, io.EOF
	}
	return n, nil
}

// throttled limits r to rate bytes per second.
type throttled struct {
	r     io.Reader
	rate  float64
	start time.Time
	n     int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if t.start.IsZero() {
		t.start = time.Now()
	}
	p = p[:min(len(p), 32<<10)]
	n, err := t.r.Read(p)
	t.n += int64(n)
	due := time.Duration(float64(t.n) / t.rate * float64(time.Second))
	time.Sleep(due - time.Since(t.start))
	return n, err
}

// closeNotifier reports when the exporter closes the source.
type closeNotifier struct {
	io.ReadCloser
	closed chan time.Time
}

func (c *closeNotifier) Close() error {
	c.closed <- time.Now() // the exporter closes its source exactly once
	return c.ReadCloser.Close()
}
