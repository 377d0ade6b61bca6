package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/examples/httpserver/internal/dataset"
)

// TestKinds: every kind has a Source under its name, and the largest
// export a kind accepts fits the Exporter's default MaxBytes.
func TestKinds(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{csvKind, trickleKind}, kindNames())
	srcs := sources()
	require.Len(t, srcs, len(kinds))
	for _, k := range kinds {
		require.NotNil(t, srcs[k.name], k.name)
		require.NotEmpty(t, k.title, k.name)
	}
	require.LessOrEqual(t, dataset.Size(maxRows), int64(exporter.DefaultMaxBytes))
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args string
		rate bool
		want csvArgs // zero: refused
	}{
		{"none", ``, true, csvArgs{Rows: defaultRows}},
		{"null", `null`, true, csvArgs{Rows: defaultRows}},
		{"empty", `{}`, false, csvArgs{Rows: defaultRows}},
		{"rows", `{"rows": 7}`, false, csvArgs{Rows: 7}},
		{"rows and rate", `{"rows": 7, "rows_per_second": 3}`, true, csvArgs{Rows: 7, RowsPerSecond: 3}},
		{"most", fmt.Sprintf(`{"rows": %d, "rows_per_second": %d}`, maxRows, maxRate), true, csvArgs{Rows: maxRows, RowsPerSecond: maxRate}},
		{"no rows", `{"rows": 0}`, true, csvArgs{}},
		{"too many rows", fmt.Sprintf(`{"rows": %d}`, maxRows+1), true, csvArgs{}},
		{"negative rate", `{"rows_per_second": -1}`, true, csvArgs{}},
		{"rate too high", fmt.Sprintf(`{"rows_per_second": %d}`, maxRate+1), true, csvArgs{}},
		{"rate of a trickle", `{"rows_per_second": 3}`, false, csvArgs{}},
		{"unknown member", `{"rows": 7, "columns": 3}`, true, csvArgs{}},
		{"not an object", `[7]`, true, csvArgs{}},
		{"a string for rows", `{"rows": "7"}`, true, csvArgs{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs("k", []byte(tt.args), tt.rate, exporter.ErrPermanent)
			if tt.want == (csvArgs{}) {
				require.ErrorIs(t, err, exporter.ErrPermanent, "refused at once: wrong args are wrong at every attempt")
				require.ErrorContains(t, err, "k args: ")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// TestSourcesAtOffsets: each kind's Source gives, from any offset, the
// dataset's bytes from there, as a resumed export needs.
func TestSourcesAtOffsets(t *testing.T) {
	t.Parallel()
	const rows = 300
	whole := dataset.Bytes(rows)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			job := &exporter.Job{Kind: k.name, Args: []byte(fmt.Sprintf(`{"rows": %d}`, rows))}
			for _, off := range []int64{0, 1, int64(len(dataset.Header)), 5000, int64(len(whole)) - 1, int64(len(whole))} {
				r, err := k.source(context.Background(), job, off)
				require.NoError(t, err)
				got, err := io.ReadAll(r)
				require.NoError(t, err)
				require.NoError(t, r.(io.Closer).Close())
				require.Equal(t, whole[off:], got, "%s from offset %d", k.name, off)
			}
			_, err := k.source(context.Background(), &exporter.Job{Kind: k.name, Args: []byte(`{"rows": -1}`)}, 0)
			require.ErrorIs(t, err, exporter.ErrPermanent)
		})
	}
}

// TestTricklePace: a trickle reads at most a slice per tick. (Only the
// lower bound of the time is certain.)
func TestTricklePace(t *testing.T) {
	t.Parallel()
	const size, tick, slices = 100, 20 * time.Millisecond, 6
	src := dataset.New(1000, 0)
	tr := newTrickle(src, size, tick)
	start := time.Now()
	got := make([]byte, 0, size*slices)
	buf := make([]byte, 4096)
	for len(got) < size*slices {
		n, err := tr.Read(buf)
		require.NoError(t, err)
		require.LessOrEqual(t, n, size, "one Read returns at most a slice")
		got = append(got, buf[:n]...)
	}
	require.GreaterOrEqual(t, time.Since(start), (slices-1)*tick, "%d slices take at least %d ticks", slices, slices-1)
	require.Equal(t, dataset.Bytes(1000)[:size*slices], got, "the trickle changes no byte")
}

// TestTrickleClose: Close stops a Read waiting for its next slice, and
// closes the reader it trickles.
func TestTrickleClose(t *testing.T) {
	t.Parallel()
	src := dataset.New(1000, 0)
	tr := newTrickle(src, 10, time.Hour)
	buf := make([]byte, 100)
	n, err := tr.Read(buf)
	require.NoError(t, err)
	require.Equal(t, 10, n)

	done := make(chan error, 1)
	go func() { // owned: received from below
		_, err := tr.Read(buf) // waits an hour for the next slice
		done <- err
	}()
	// Close a little later, so that the Read is (almost certainly) waiting
	// by then; a Read that begins after Close fails the same way.
	closer := time.AfterFunc(20*time.Millisecond, func() { tr.Close() })
	defer closer.Stop()
	select {
	case err := <-done:
		require.ErrorIs(t, err, errTrickleClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop a Read waiting for its next slice")
	}
	_, err = src.Read(buf)
	require.ErrorIs(t, err, dataset.ErrClosed, "the trickled reader is closed too")
	require.NoError(t, tr.Close(), "Close is idempotent")
}

// TestTrickleProgressInsideAChunk: what the trickle kind is for. While an
// export of it has not filled its first chunk (Job.Bytes is 0), the bytes
// read from its source (Job.Read) move, and the API shows them.
func TestTrickleProgressInsideAChunk(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 0, exporter.Config{})
	job := in.start(t, "alice", fmt.Sprintf(`{"kind": %q, "args": {"rows": 100000}}`, trickleKind))
	require.Greater(t, dataset.Size(100000), int64(job.ChunkSize))

	var seen []int64 // the values of Read while Bytes is 0
	eventually(t, 20*time.Second, func() bool {
		j := in.get(t, "alice", job.ID)
		require.Zero(t, j.Bytes, "the first chunk was stored before Read moved twice; seen %v", seen)
		if j.Read > 0 && !slices.Contains(seen, j.Read) {
			seen = append(seen, j.Read)
		}
		return len(seen) >= 2
	})
	t.Logf("Read %v while Bytes was 0 (chunks of %d bytes)", seen, job.ChunkSize)

	r := in.call(t, "DELETE", apiPrefix+"/"+job.ID, "alice", "")
	require.Equal(t, http.StatusOK, r.status, "body %s", r.body)
	var cancelled exporter.Job
	require.NoError(t, json.Unmarshal(r.body, &cancelled))
	require.Equal(t, exporter.StatusCancelled, cancelled.Status)
}
