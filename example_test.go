package exporter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing/iotest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/exporterkit/exporter"
)

// The examples run on miniredis, an in-process Redis; a service passes its
// own client, created with ContextTimeoutEnabled: true. Example spells the
// setup out; the others get it from newExampleExporter.

// newExampleExporter returns an Exporter with cfg on a fresh miniredis, set
// up as in Example, and the function that closes its client and the
// miniredis (after the example's Shutdown).
func newExampleExporter(cfg exporter.Config) (*exporter.Exporter, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	exp, err := exporter.New(exporter.NewRedisStore(client), cfg)
	if err != nil {
		log.Fatal(err)
	}
	return exp, func() {
		client.Close()
		mr.Close()
	}
}

func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	exp, err := exporter.New(exporter.NewRedisStore(client), exporter.Config{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The user must hold Config.Permission, "exporter" by default.
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	rows := strings.NewReader("id,name\n1,Ada\n2,Grace\n")
	job, err := exp.StartExport(ctx, alice, rows)
	if err != nil {
		log.Fatal(err)
	}

	// The copy runs in the background; any instance can wait for its end.
	job, err = exp.WaitExport(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, job.Bytes, "bytes")

	d, err := exp.OpenExport(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	b, err := io.ReadAll(d) // verifies the bytes against job.Checksum
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(b))

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// completed 22 bytes
	// id,name
	// 1,Ada
	// 2,Grace
}

func ExampleExporter_StartExport() {
	exp, closeRedis := newExampleExporter(exporter.Config{})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	csv := "id,name\n1,Ada\n"
	job, err := exp.StartExport(ctx, alice, strings.NewReader(csv),
		exporter.WithTotal(int64(len(csv))), // for progress only
		exporter.WithMetadata(map[string]string{exporter.MetadataFilename: "users.csv", exporter.MetadataContentType: "text/csv"}))
	if err != nil {
		log.Fatal(err)
	}
	// StartExport returns as soon as the job is recorded.
	fmt.Println(job.Status, job.Owner, job.Total, job.Metadata[exporter.MetadataFilename])

	// Starting needs the permission; nothing is recorded without it, and
	// the reader is closed if it is an io.Closer.
	bob := exporter.User{ID: "bob"}
	_, err = exp.StartExport(ctx, bob, strings.NewReader(csv))
	fmt.Println(errors.Is(err, exporter.ErrForbidden))

	// Shutdown lets the running export finish.
	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	job, err = exp.GetExportStatus(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status)
	// Output:
	// pending alice 14 users.csv
	// true
	// completed
}

func ExampleExporter_GetExportStatus() {
	exp, closeRedis := newExampleExporter(exporter.Config{ChunkSize: 1024})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A source that delivers half of its 4 KiB, then waits.
	pr, pw := io.Pipe()
	go pw.Write(make([]byte, 2048))
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	job, err := exp.StartExport(ctx, alice, pr, exporter.WithTotal(4096))
	if err != nil {
		log.Fatal(err)
	}

	// Bytes grows chunk by chunk (ChunkSize) while the job runs.
	for job.Bytes < 2048 {
		time.Sleep(5 * time.Millisecond)
		if job, err = exp.GetExportStatus(ctx, alice, job.ID); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("%s %d/%d %.0f%%\n", job.Status, job.Bytes, job.Total, 100*job.Progress())

	// The second half, and the end of the source.
	pw.Write(make([]byte, 2048))
	pw.Close()
	job, err = exp.WaitExport(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %d/%d %.0f%%\n", job.Status, job.Bytes, job.Total, 100*job.Progress())

	// Only the owner (and holders of Config.AdminPermission) see a job;
	// to anyone else it does not exist.
	mallory := exporter.User{ID: "mallory", Permissions: []string{"exporter"}}
	_, err = exp.GetExportStatus(ctx, mallory, job.ID)
	fmt.Println(errors.Is(err, exporter.ErrNotFound))

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// running 2048/4096 50%
	// completed 4096/4096 100%
	// true
}

func ExampleExporter_CancelExport() {
	exp, closeRedis := newExampleExporter(exporter.Config{})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Nothing is ever written to pw: the export stays pending or running.
	pr, pw := io.Pipe()
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	job, err := exp.StartExport(ctx, alice, pr)
	if err != nil {
		log.Fatal(err)
	}

	// The cancel is recorded before CancelExport returns, and reaches the
	// instance that runs the export, which closes its reader.
	job, err = exp.CancelExport(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, errors.Is(job.Err(), exporter.ErrCancelled))

	// Cancelling again is not an error.
	_, err = exp.CancelExport(ctx, alice, job.ID)
	fmt.Println(err)

	// A cancelled export has no bytes to open.
	_, err = exp.OpenExport(ctx, alice, job.ID)
	fmt.Println(errors.Is(err, exporter.ErrNotReady))

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// The reader was closed: the writing side sees it.
	_, err = pw.Write([]byte("late row\n"))
	fmt.Println(err)
	// Output:
	// cancelled true
	// <nil>
	// true
	// io: read/write on closed pipe
}

func ExampleExporter_OpenExport() {
	exp, closeRedis := newExampleExporter(exporter.Config{})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	job, err := exp.StartExport(ctx, alice, strings.NewReader("0123456789abcdefghijklmnopqrstuvwxyz"),
		exporter.WithMetadata(map[string]string{exporter.MetadataFilename: "alphabet.txt", exporter.MetadataContentType: "text/plain"}))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := exp.WaitExport(ctx, alice, job.ID); err != nil {
		log.Fatal(err)
	}

	// A download handler: a Download is an io.ReadSeeker, so
	// http.ServeContent serves it, Range requests included.
	download := func(w http.ResponseWriter, r *http.Request) {
		d, err := exp.OpenExport(r.Context(), alice, r.PathValue("id"))
		switch {
		case errors.Is(err, exporter.ErrNotFound):
			http.NotFound(w, r)
			return
		case errors.Is(err, exporter.ErrNotReady):
			http.Error(w, "export not ready", http.StatusConflict)
			return
		case err != nil:
			http.Error(w, "export unavailable", http.StatusInternalServerError)
			return
		}
		defer d.Close()
		job := d.Job()
		w.Header().Set("Content-Type", job.Metadata[exporter.MetadataContentType])
		http.ServeContent(w, r, job.Metadata[exporter.MetadataFilename], job.FinishedAt, d)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /exports/{id}", download)

	req := httptest.NewRequest(http.MethodGet, "/exports/"+job.ID, nil)
	req.Header.Set("Range", "bytes=10-15")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Content-Range"), rec.Body.String())

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 206 bytes 10-15/36 abcdef
}

func ExampleExporter_WaitExport() {
	exp, closeRedis := newExampleExporter(exporter.Config{})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}

	// A source that delivers one byte per Read.
	ok, err := exp.StartExport(ctx, alice, iotest.OneByteReader(strings.NewReader("hello\n")))
	if err != nil {
		log.Fatal(err)
	}
	// A source that fails.
	bad, err := exp.StartExport(ctx, alice, iotest.ErrReader(errors.New("database connection lost")))
	if err != nil {
		log.Fatal(err)
	}

	// WaitExport returns the job once it is completed, failed or
	// cancelled; a failed job is not an error of WaitExport: its reason
	// is in job.Error and job.Err().
	for _, id := range []string{ok.ID, bad.ID} {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		job, err := exp.WaitExport(wctx, alice, id)
		cancel()
		if err != nil {
			log.Fatal(err)
		}
		if job.Status == exporter.StatusCompleted {
			fmt.Println(job.Status, job.Bytes, job.Checksum)
		} else {
			fmt.Println(job.Status, job.Err())
		}
	}

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// completed 6 sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
	// failed database connection lost
}

// An Exporter reports its work through OpenTelemetry: here to the SDK's
// in-memory reader; a service passes the MeterProvider that feeds its
// dashboards.
func ExampleConfig_meterProvider() {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	exp, closeRedis := newExampleExporter(exporter.Config{MeterProvider: provider})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	job, err := exp.StartExport(ctx, alice, strings.NewReader("id,name\n1,Ada\n"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := exp.WaitExport(ctx, alice, job.ID); err != nil {
		log.Fatal(err)
	}
	if err := exp.Shutdown(ctx); err != nil { // the run has surely ended
		log.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
			for _, p := range sum.DataPoints {
				name := m.Name
				if status, ok := p.Attributes.Value("status"); ok {
					name += "{status=" + status.String() + "}"
				}
				fmt.Println(name, p.Value)
			}
		}
	}
	// Unordered output:
	// exporter.exports.started 1
	// exporter.exports.ended{status=completed} 1
	// exporter.bytes.stored 14
}

func ExampleExporter_WatchExport() {
	// Small chunks, so that a small export shows progress.
	exp, closeRedis := newExampleExporter(exporter.Config{ChunkSize: 1024})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}

	// A source that delivers one chunk, then the rest once the watcher
	// below has seen the first.
	r, w := io.Pipe()
	seen := make(chan struct{})
	go func() {
		w.Write(make([]byte, 1024))
		<-seen
		w.Write(make([]byte, 2048))
		w.Close()
	}()
	job, err := exp.StartExport(ctx, alice, r, exporter.WithTotal(3072))
	if err != nil {
		log.Fatal(err)
	}

	// Snapshots come as the job changes, at most one per WatchEvery; the
	// last is the terminal one. An HTTP handler would send each as a
	// Server-Sent Event.
	progressed := false
	for job, err := range exp.WatchExport(ctx, alice, job.ID, exporter.WatchEvery(20*time.Millisecond)) {
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case job.Status.Terminal():
			fmt.Println(job.Status, job.Bytes, "bytes")
		case job.Bytes > 0 && !progressed:
			fmt.Printf("%s %.0f%%\n", job.Status, 100*job.Progress())
			progressed = true
			close(seen)
		}
	}

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// running 33%
	// completed 3072 bytes
}

func ExampleExporter_ListExports() {
	exp, closeRedis := newExampleExporter(exporter.Config{})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	for _, name := range []string{"january.csv", "february.csv", "march.csv"} {
		job, err := exp.StartExport(ctx, alice, strings.NewReader("id\n1\n"),
			exporter.WithMetadata(map[string]string{exporter.MetadataFilename: name}))
		if err != nil {
			log.Fatal(err)
		}
		if _, err := exp.WaitExport(ctx, alice, job.ID); err != nil {
			log.Fatal(err)
		}
	}

	// Newest first, two per page; Next continues the listing.
	opts := exporter.ListOptions{Limit: 2}
	for page := 1; ; page++ {
		list, err := exp.ListExports(ctx, alice, opts)
		if err != nil {
			log.Fatal(err)
		}
		for _, job := range list.Jobs {
			fmt.Println(page, job.Metadata[exporter.MetadataFilename], job.Status)
		}
		if list.Next == "" {
			break
		}
		opts.Cursor = list.Next
	}

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 1 march.csv completed
	// 1 february.csv completed
	// 2 january.csv completed
}

// A durable export: any instance whose Config.Sources has its kind runs
// it, and if that instance dies or shuts down, another resumes it from the
// bytes already stored. The Source opens the export's bytes from an
// offset; this one serves rows from a table, and a real one would run a
// query from the row that offset falls in (or skip with SkipReader).
func ExampleExporter_Enqueue() {
	rows := strings.Repeat("id,amount\n1,9.99\n2,4.50\n", 3)
	report := func(ctx context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
		// job.Args are Enqueue's args: what to export.
		if string(job.Args) != `{"table":"orders"}` {
			return nil, fmt.Errorf("%w: unknown args %s", exporter.ErrPermanent, job.Args)
		}
		return strings.NewReader(rows[offset:]), nil
	}
	exp, closeRedis := newExampleExporter(exporter.Config{
		Sources: map[string]exporter.Source{"orders-report": report},
	})
	defer closeRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice := exporter.User{ID: "alice", Permissions: []string{"exporter"}}
	job, err := exp.Enqueue(ctx, alice, "orders-report", []byte(`{"table":"orders"}`))
	if err != nil {
		log.Fatal(err)
	}
	job, err = exp.WaitExport(ctx, alice, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Kind, job.Status, job.Bytes, "bytes in", job.Attempt, "attempt")

	if err := exp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// orders-report completed 72 bytes in 1 attempt
}
