// Command quickstart is the README's quick start, whole: a service that
// offers one durable export kind, "orders", over HTTP with exporterhttp,
// and shuts down with a deadline. The README quotes run and its helpers
// verbatim (a test checks it), so the snippet there always compiles.
//
//	go run ./examples/quickstart          # embedded miniredis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/quickstart
//
//	curl -si -H 'X-User: alice' -H 'Content-Type: application/json' -d '{"kind":"orders","args":{"rows":1000},"filename":"orders.csv"}' http://127.0.0.1:8080/exports/
//	curl -sOJ -H 'X-User: alice' http://127.0.0.1:8080/exports/<id>/download   # saved as orders.csv
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := dial(os.Getenv("REDIS_URL"))
	if err != nil {
		slog.Error("redis", "err", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		slog.Error("listen", "err", err)
		os.Exit(1)
	}
	fmt.Printf("listening on http://%s/exports/\n", ln.Addr())
	if err := run(ctx, client, ln); err != nil {
		slog.Error("quickstart", "err", err)
		os.Exit(1)
	}
}

// dial connects to url, or to an embedded miniredis when url is empty.
func dial(url string) (redis.UniversalClient, error) {
	if url == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, err
		}
		url = "redis://" + mr.Addr()
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}

// run serves the exports API on ln until ctx is done.
func run(ctx context.Context, client redis.UniversalClient, ln net.Listener) error {
	exp, err := exporter.New(exporter.NewRedisStore(client), exporter.Config{
		// Durable exports: any instance with the kind runs them, and resumes
		// them from the stored bytes if their instance dies.
		Sources: map[string]exporter.Source{"orders": orders},
	})
	if err != nil {
		return err
	}
	api, err := exporterhttp.New(exporterhttp.Config{
		Exporter:     exp,
		Authenticate: authenticate,
		Kinds:        []string{"orders"},
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/exports/", http.StripPrefix("/exports", api))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(api.CloseStreams) // ends open event streams

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
	}
	// Shutdown with a deadline: requests in flight finish, then running
	// exports get until the deadline; durable ones still running are
	// handed back, and another instance resumes them.
	stop, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return errors.Join(err, srv.Shutdown(stop), exp.Shutdown(stop))
}

// authenticate is the service's own: a session cookie or a token in a real
// service. A user needs the "exporter" permission to start exports
// (exporter.DefaultPermission, Config.Permission); without it the API
// answers 403.
func authenticate(r *http.Request) (exporter.User, error) {
	id := r.Header.Get("X-User")
	if id == "" {
		return exporter.User{}, exporter.ErrUnauthenticated // 401
	}
	return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission}}, nil
}

// orders is the "orders" kind: CSV rows, as many as its args say. A
// resumed attempt starts at offset, and must produce the same bytes from
// there as a run from 0 (SkipReader does it for a source that cannot seek).
func orders(ctx context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
	var args struct {
		Rows int `json:"rows"`
	}
	if err := json.Unmarshal(job.Args, &args); err != nil || args.Rows < 0 || args.Rows > 1_000_000 {
		return nil, fmt.Errorf("%w: args %s: want {\"rows\": 0 to 1000000}", exporter.ErrPermanent, job.Args)
	}
	var b strings.Builder
	b.WriteString("id,customer,total\n")
	for i := range args.Rows {
		fmt.Fprintf(&b, "%d,customer-%d,%d.%02d\n", i+1, i%97, i*7%1000, i%100)
	}
	return exporter.SkipReader(strings.NewReader(b.String()), offset)
}
