package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/examples/httpserver/internal/dataset"
)

// The kinds of export the service offers. Each is a durable export
// (Exporter.Enqueue, which exporterhttp's POST calls) whose Source makes a
// generated CSV file (package dataset) from the export's args, from any
// byte offset: any instance on the same Redis and key prefix runs it, and
// one resumes an export where another stopped, with the same bytes.

// The kinds' names.
const (
	csvKind     = "csv"
	trickleKind = "csv-trickle"
)

// Limits and defaults of the args.
const (
	defaultRows = 1000
	// maxRows keeps the largest dataset (about 240 MB) under the
	// Exporter's default MaxBytes (256 MiB).
	maxRows = 3_000_000
	maxRate = 10_000_000 // rows per second
)

// The pace of a trickle: trickleSlice bytes every trickleTick, 20 KiB a
// second. A stored chunk (64 KiB by default) then takes about 3 s, so the
// bytes read from the source (Job.Read, recorded every second) visibly
// move while the bytes stored (Job.Bytes) stay where they are.
const (
	trickleSlice = 2 << 10
	trickleTick  = 100 * time.Millisecond
)

// kind is a kind of export on offer.
type kind struct {
	name   string
	title  string // in the page's menu
	rate   bool   // its args take rows_per_second
	source exporter.Source
}

// kinds are the kinds on offer, in the page's order.
var kinds = []kind{
	{name: csvKind, title: "CSV at a chosen rate", rate: true, source: csvSource},
	{name: trickleKind, title: "CSV trickling at 20 KiB/s", source: trickleSource},
}

// sources returns the kinds' Sources, for exporter.Config.Sources.
func sources() map[string]exporter.Source {
	m := make(map[string]exporter.Source, len(kinds))
	for _, k := range kinds {
		m[k.name] = k.source
	}
	return m
}

// kindNames returns the kinds' names, for exporterhttp.Config.Kinds.
func kindNames() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return names
}

// csvArgs are the args of a csvKind export, {"rows": 1000,
// "rows_per_second": 0}, and of a trickleKind export, {"rows": 1000}.
// Absent members take their defaults: 1000 rows, as fast as possible.
type csvArgs struct {
	Rows          int64 `json:"rows"`
	RowsPerSecond int   `json:"rows_per_second"`
}

// parseArgs decodes and checks the args of a kind: unknown members, and
// rows_per_second when !rate, are refused with an error that wraps
// sentinel: exporter.ErrPermanent in a Source, which fails the export at
// once (args that are wrong now are wrong at every attempt), and
// exporter.ErrInvalid before the export is enqueued (prepare: a 400).
func parseArgs(kind string, raw []byte, rate bool, sentinel error) (csvArgs, error) {
	a := csvArgs{Rows: defaultRows}
	bad := func(format string, args ...any) (csvArgs, error) {
		return csvArgs{}, fmt.Errorf("%w: %s args: %s", sentinel, kind, fmt.Sprintf(format, args...))
	}
	if len(bytes.TrimSpace(raw)) > 0 { // no args: every default
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			if rate {
				return bad(`want {"rows": 1 to %d, "rows_per_second": 0 to %d}`, maxRows, maxRate)
			}
			return bad(`want {"rows": 1 to %d}`, maxRows)
		}
	}
	switch {
	case a.Rows < 1 || a.Rows > maxRows:
		return bad("rows must be from 1 to %d", maxRows)
	case !rate && a.RowsPerSecond != 0:
		return bad("a trickle has its own pace: rows_per_second is not one of its args")
	case a.RowsPerSecond < 0 || a.RowsPerSecond > maxRate:
		return bad("rows_per_second must be from 0 (as fast as possible) to %d", maxRate)
	}
	return a, nil
}

// csvSource is the Source of csvKind: the dataset of its args, at most
// rows_per_second rows a second, from offset on.
func csvSource(_ context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
	a, err := parseArgs(csvKind, job.Args, true, exporter.ErrPermanent)
	if err != nil {
		return nil, err
	}
	return dataset.NewAt(a.Rows, a.RowsPerSecond, offset), nil
}

// trickleSource is the Source of trickleKind: the dataset of its args,
// from offset on, trickleSlice bytes every trickleTick.
func trickleSource(_ context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
	a, err := parseArgs(trickleKind, job.Args, false, exporter.ErrPermanent)
	if err != nil {
		return nil, err
	}
	return newTrickle(dataset.NewAt(a.Rows, 0, offset), trickleSlice, trickleTick), nil
}

// errTrickleClosed is returned by a trickle's Read after Close.
var errTrickleClosed = errors.New("trickle closed")

// trickle reads r at most size bytes every tick: a slice of size bytes
// may be read at once, and the next slice begins tick after this one
// began. Its Read and Close may be called concurrently: Close makes a Read
// that waits for the next slice return errTrickleClosed at once, and
// closes r. Read is for one goroutine at a time.
type trickle struct {
	r    io.ReadCloser
	size int
	tick time.Duration

	left   int       // bytes the current slice may still read
	next   time.Time // when the next slice begins
	closed chan struct{}
	once   sync.Once
}

func newTrickle(r io.ReadCloser, size int, tick time.Duration) *trickle {
	return &trickle{r: r, size: size, tick: tick, closed: make(chan struct{})}
}

// Read implements io.Reader.
func (t *trickle) Read(p []byte) (int, error) {
	select {
	case <-t.closed:
		return 0, errTrickleClosed
	default:
	}
	if len(p) == 0 {
		return 0, nil
	}
	if t.left == 0 {
		if wait := time.Until(t.next); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-t.closed:
				timer.Stop()
				return 0, errTrickleClosed
			case <-timer.C:
			}
		}
		t.left, t.next = t.size, time.Now().Add(t.tick)
	}
	n, err := t.r.Read(p[:min(len(p), t.left)])
	t.left -= n
	return n, err
}

// Close implements io.Closer. It is safe to call more than once and
// concurrently with Read. It closes r before it wakes a waiting Read, so
// that once that Read returned, r is closed.
func (t *trickle) Close() error {
	err := t.r.Close()
	t.once.Do(func() { close(t.closed) })
	return err
}

// prepare is the exporterhttp Config.Prepare of the service: it checks a
// POST's args before the export is enqueued (a bad one is a 400, not an
// export that fails) and sets the export's total, the dataset's size, so
// that the page shows a percentage.
func prepare(_ *http.Request, _ exporter.User, kind string, args json.RawMessage) ([]exporter.StartOption, error) {
	a, err := parseArgs(kind, args, kind == csvKind, exporter.ErrInvalid)
	if err != nil {
		return nil, err
	}
	return []exporter.StartOption{exporter.WithTotal(dataset.Size(a.Rows))}, nil
}
