// Command bench measures the exporter against a raw go-redis baseline on
// the same Redis, in the same run, as issue 3 asks: every workload runs
// the exporter and its hand-written go-redis equivalent alternately
// (A B A B ...), -reps times each, and the table reports medians, min-max
// and the ratio of the medians. Absolute figures on shared machines are
// noise; the ratios are what the targets are about.
//
//	go run ./bench                        # all workloads, 5 repetitions
//	go run ./bench -quick -reps 1         # smoke run with smaller sizes
//	go run ./bench -only W2,W2b -chart chunks.svg
//	go run ./bench -addr 127.0.0.1:6379   # an existing Redis: only its own keys
//
// Without -addr it starts a private redis-server (internal/redistest) on a
// free loopback port with persistence off, and stops it on exit, also on
// an error or an interrupt. With -addr it touches only keys under a random
// prefix, which it deletes when it ends; it never flushes anything.
//
// Besides the table it prints one machine-readable line per figure:
//
//	RESULT <workload> exporter=<x> raw=<y> ratio=<x/y>
//	RESULT <M1|M2|M3> exporter=<x> limit=<target>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
)

type options struct {
	addr    string
	reps    int
	only    []string
	quick   bool
	chart   string
	verbose bool
	timeout time.Duration
}

func main() {
	if arg := os.Getenv(w7WorkerEnv); arg != "" {
		w7Worker(arg) // never returns
	}
	var o options
	var only string
	flag.StringVar(&o.addr, "addr", "", "use the Redis at `HOST:PORT` instead of starting one; only keys under a random prefix are touched and deleted at the end")
	flag.IntVar(&o.reps, "reps", 5, "repetitions of each side of each workload (exporter and raw alternate)")
	flag.StringVar(&only, "only", "", "comma-separated workload `ids` to run (W1,W2,W2b,W2b-4K,W2b-16K,W2b-1M,W3,W4,W5,W6,W6-1M,W7,M1,M2,M3); empty runs all")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: smaller sizes (32 MiB exports, 200 W1 jobs, 1 s W3), not comparable with full runs")
	flag.StringVar(&o.chart, "chart", "", "write an SVG chart of MB/s against chunk size (W2, W2b) to `FILE.svg`")
	flag.BoolVar(&o.verbose, "v", false, "also print the Redis commands (INFO commandstats deltas) of every side of every repetition")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up (and exit non-zero) after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %q", flag.Args())
	}
	if o.reps < 1 {
		fatalf("-reps must be at least 1, not %d", o.reps)
	}
	if o.timeout <= 0 {
		fatalf("-timeout must be positive")
	}
	if only != "" {
		for _, id := range strings.Split(only, ",") {
			if id = strings.TrimSpace(id); id != "" {
				o.only = append(o.only, id)
			}
		}
	}
	if err := run(o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func run(o options) (err error) {
	// Workloads only describe themselves until run: check -only before
	// starting anything.
	if _, err := selectWorkloads((&bench{sizes: sizesFor(o.quick)}).workloads(), o.only); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("bench: -timeout %v reached", o.timeout))
	defer cancel()

	addr := o.addr
	var srv *redistest.Server
	if addr == "" {
		srv, err = redistest.Start(redistest.Options{Args: []string{"--save", "", "--appendonly", "no"}})
		if err != nil {
			return fmt.Errorf("starting redis-server: %w", err)
		}
		addr = srv.Addr
		defer func() {
			if serr := srv.Stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stopping redis-server: %w", serr))
			}
		}()
		// The last resort against a hang that ignores every context: stop
		// the server we started and exit. Stop is safe to call twice.
		watchdog := time.AfterFunc(o.timeout+time.Minute, func() {
			fmt.Fprintf(os.Stderr, "bench: still running %v after -timeout; stopping redis-server and exiting\n", time.Minute)
			srv.Stop()
			os.Exit(3)
		})
		defer watchdog.Stop()
	}

	b, err := newBench(ctx, addr, o)
	if err != nil {
		return err
	}
	defer func() {
		// A context of its own: the run's may be cancelled (interrupt).
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if cerr := b.close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
	}()

	selected, _ := selectWorkloads(b.workloads(), o.only)
	started := time.Now()
	if err := b.describe(ctx, srv != nil); err != nil {
		return err
	}
	if err := b.warmUp(ctx); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var results []*result
	for _, w := range selected {
		res, err := b.runWorkload(ctx, w)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				err = fmt.Errorf("%w (%v)", err, cause)
			}
			return fmt.Errorf("%s: %w", w.id, err)
		}
		results = append(results, res...)
	}
	fmt.Println()
	printTable(os.Stdout, results, b.sizes)
	fmt.Println()
	for _, r := range results {
		fmt.Println(r.resultLine())
	}
	if o.chart != "" {
		if err := writeChart(o.chart, results, b); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		fmt.Printf("\nchart written to %s\n", o.chart)
	}
	fmt.Printf("\ntotal time %v\n", time.Since(started).Round(time.Second))
	return nil
}

// selectWorkloads returns the workloads only names, in their usual order.
// An id selects the workload of that id, every workload of that family
// ("W2b" selects W2b-4K, W2b-16K and W2b-1M), or the workload of one of its
// figures ("W4p99" selects W4).
func selectWorkloads(ws []*workload, only []string) ([]*workload, error) {
	if len(only) == 0 {
		return ws, nil
	}
	matches := func(w *workload, id string) bool {
		if strings.EqualFold(w.id, id) || strings.HasPrefix(strings.ToLower(w.id), strings.ToLower(id)+"-") {
			return true
		}
		return slices.ContainsFunc(w.rows, func(r row) bool { return strings.EqualFold(r.id, id) })
	}
	var out []*workload
	for _, id := range only {
		if !slices.ContainsFunc(ws, func(w *workload) bool { return matches(w, id) }) {
			var known []string
			for _, w := range ws {
				known = append(known, w.id)
			}
			return nil, fmt.Errorf("-only: unknown workload %q (known: %s)", id, strings.Join(known, ", "))
		}
	}
	for _, w := range ws {
		if slices.ContainsFunc(only, func(id string) bool { return matches(w, id) }) {
			out = append(out, w)
		}
	}
	return out, nil
}
