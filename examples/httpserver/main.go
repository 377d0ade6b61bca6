// Command httpserver is a small HTTP service on the exporter: a page and
// the JSON API of package exporterhttp to start CSV exports, follow their
// progress live (Server-Sent Events), cancel them and download them, from
// any of several instances that share one Redis. What is its own is the
// demo login (login.go), the kinds of export it offers (dataset.go), the
// page (static/), its metrics (metrics.go), and its startup and shutdown
// (this file).
//
//	go run ./examples/httpserver                         # embedded miniredis
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/httpserver -addr 127.0.0.1:8081
//
// Without REDIS_URL it starts an embedded miniredis and prints its URL, so
// that a second instance can share it. It prints "listening on
// http://HOST:PORT" once it accepts connections, and stops cleanly on
// SIGINT or SIGTERM. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one kills the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		os.Exit(2) // the flag package has printed the problem and the usage
	case err != nil:
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line.
type usageError struct{ error }

// Timeouts of a shutdown.
const (
	// httpShutdownTimeout bounds the wait for requests in flight (a
	// download, say) once the server stops accepting connections.
	httpShutdownTimeout = 10 * time.Second
	// redisPingTimeout bounds the check that REDIS_URL answers.
	redisPingTimeout = 5 * time.Second
)

// run runs the service until ctx is done, then shuts it down and returns
// nil. It returns an error only if the service could not start.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	flags.SetOutput(stderr)
	addr := flags.String("addr", "127.0.0.1:8080", "`address` to listen on (port 0 picks a free port)")
	prefix := flags.String("prefix", "exporter-httpserver:", "Redis key `prefix`; instances that share a Redis and a prefix share their exports")
	grace := flags.Duration("grace", 5*time.Second, "on shutdown, how long running exports may go on before they are handed back to the queue")
	heartbeat := flags.Duration("heartbeat", exporterhttp.DefaultHeartbeat, "interval of the heartbeats of the event streams; the page takes a stream silent for twice as long as lost")
	lease := flags.Duration("lease", exporter.DefaultLeaseTTL, "how long the exports of an instance that died wait before another instance resumes them (exporter.Config.LeaseTTL)")
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "Usage: httpserver [flags]\n\nREDIS_URL selects the Redis (redis://[user:password@]host:port/db); without it an embedded miniredis is started.\n\nFlags:\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	var err error
	switch {
	case flags.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", flags.Args())
	case *heartbeat <= 0:
		err = fmt.Errorf("-heartbeat %v: must be above 0", *heartbeat)
	case *lease < 100*time.Millisecond:
		err = fmt.Errorf("-lease %v: must be at least 100ms", *lease)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		flags.Usage()
		return usageError{err}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	client, closeRedis, err := connect(ctx, getenv("REDIS_URL"), stdout, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	// The Exporter's metrics, served at GET /metrics (see metrics.go).
	metrics := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer meters.Shutdown(context.Background())

	exp, err := exporter.New(exporter.NewRedisStore(client).WithPrefix(*prefix), exporter.Config{
		AdminPermission: adminPermission,
		Retention:       time.Hour,
		MaxPerUser:      8, // a user's ninth export waits until one of the eight ends
		LeaseTTL:        *lease,
		Sources:         sources(),
		Logger:          log,
		MeterProvider:   meters,
	})
	if err != nil {
		return err
	}
	svc, err := newService(exp, log, *heartbeat)
	if err != nil {
		exp.Shutdown(ctx) // no export was started: returns at once
		return err
	}
	svc.mux.Handle("GET /metrics", metricsHandler(metrics))
	hs := &http.Server{
		Handler:           svc,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: downloads are large and event streams long.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Shutdown closes the listeners, then calls this: the event streams
	// end, so that the requests in flight can finish.
	hs.RegisterOnShutdown(svc.CloseStreams)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		svc.CloseStreams()
		exp.Shutdown(ctx) // no export was started: returns at once
		return err
	}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	log.Info("listening", "addr", ln.Addr().String(), "prefix", *prefix)

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }() // owned: run waits for it below

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served: // the listener failed
		log.Error("serving failed", "err", err)
		served <- err
	}

	hctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(hctx); err != nil {
		log.Warn("requests still in flight; closing their connections", "err", err)
		hs.Close()
	}
	serveErr := <-served

	ectx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := exp.Shutdown(ectx); err != nil {
		// The durable exports that were still running are handed back:
		// another instance, or this one after its restart, resumes them.
		log.Warn("exports still running at shutdown were handed back", "err", err)
	}
	if !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	log.Info("stopped")
	return nil
}

// connect returns a client of the Redis at redisURL, or of an embedded
// miniredis if redisURL is "", and the function that closes both.
func connect(ctx context.Context, redisURL string, stdout io.Writer, log *slog.Logger) (*redis.Client, func(), error) {
	if redisURL != "" {
		opt, err := redis.ParseURL(redisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		// Calls return by their ctx deadline (see the exporter's package doc).
		opt.ContextTimeoutEnabled = true
		client := redis.NewClient(opt)
		pctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
		defer cancel()
		if err := client.Ping(pctx).Err(); err != nil {
			client.Close()
			return nil, nil, fmt.Errorf("REDIS_URL %s: %w", redact(redisURL), err)
		}
		log.Info("using Redis", "url", redact(redisURL))
		return client, func() { client.Close() }, nil
	}

	mr, err := miniredis.Run() // on 127.0.0.1, a free port
	if err != nil {
		return nil, nil, fmt.Errorf("starting miniredis: %w", err)
	}
	url := "redis://" + mr.Addr()
	fmt.Fprintf(stdout, "embedded miniredis at %s (start a second instance with REDIS_URL=%s)\n", url, url)
	stopClock := runClock(mr)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return client, func() {
		client.Close()
		stopClock()
		mr.Close()
	}, nil
}

// runClock makes the TTLs of mr run in real time, which miniredis leaves
// to its tests (FastForward), so that jobs expire after their retention and
// the job of an instance that died fails when its lease lapses. It returns
// the function that stops it.
func runClock(mr *miniredis.Miniredis) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: stop waits for it
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// redact hides the password of a Redis URL.
func redact(redisURL string) string {
	u, err := url.Parse(redisURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
