package exporter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

// TestStartOutlivesCallerContext: the copy does not stop when the caller's
// ctx ends (a finished HTTP request), but it keeps the ctx's values, which
// the Logger's handler sees.
func TestStartOutlivesCallerContext(t *testing.T) {
	e := newEnv(t, "miniredis")
	h := newRecordingHandler()
	x := e.exporter(t, Config{ChunkSize: testChunk, Logger: slog.New(h)})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-42"))
	src := newFeedSource(randomBytes(testChunk))
	job, err := x.StartExport(ctx, alice, src)
	require.NoError(t, err)
	cancel() // the request is over
	src.feed(randomBytes(testChunk))
	src.end(nil)
	waitFor(t, x, alice, job.ID, StatusCompleted)
	require.NoError(t, x.Shutdown(testCtx(t)))
	var seen []any
	for _, r := range h.snapshot() {
		if r.msg == "export completed" {
			seen = append(seen, r.ctxValue)
		}
	}
	require.Equal(t, []any{"trace-42"}, seen)
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestStatusIsOneRoundTrip: GetExportStatus sends one command.
func TestStatusIsOneRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{})
		job := completedExport(t, x, []byte("x"))
		hook := &countingHook{}
		c := e.newClient(t)
		c.AddHook(hook)
		y := e.exporterOn(t, NewRedisStore(c).WithPrefix(e.prefix), Config{})
		// The first call may load the script (EVALSHA, then EVAL on NOSCRIPT).
		_, err := y.GetExportStatus(testCtx(t), alice, job.ID)
		require.NoError(t, err)
		hook.n.Store(0)
		for range 10 {
			_, err := y.GetExportStatus(testCtx(t), alice, job.ID)
			require.NoError(t, err)
		}
		require.Equal(t, int64(10), hook.n.Load())
	})
}

// boundedStore records the most chunks asked for in one read.
type boundedStore struct {
	Store
	most atomic.Int64
}

func (b *boundedStore) ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error) {
	for {
		m := b.most.Load()
		if int64(n) <= m || b.most.CompareAndSwap(m, int64(n)) {
			break
		}
	}
	return b.Store.ReadChunks(ctx, id, first, n)
}

// TestDownloadMemoryBounded: however large the export and the caller's
// buffer, a Download asks the store for a bounded number of chunks at once.
func TestDownloadMemoryBounded(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{ChunkSize: testChunk})
	data := randomBytes(100 * testChunk)
	job := completedExport(t, x, data)
	bs := &boundedStore{Store: e.store}
	y := e.exporterOn(t, bs, Config{})
	d, err := y.OpenExport(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	p := make([]byte, len(data))
	_, err = d.ReadAt(p, 0)
	require.NoError(t, err)
	require.Equal(t, data, p)
	var buf bytes.Buffer
	_, err = io.Copy(&buf, d)
	require.NoError(t, err)
	require.Equal(t, data, buf.Bytes())
	require.LessOrEqual(t, bs.most.Load(), int64(16), "chunks per store read")
}

// TestConcurrentExports runs many exports on two instances at once, with
// status reads, cancels and downloads racing them (run with -race).
func TestConcurrentExports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		a := e.exporter(t, Config{ChunkSize: testChunk, MaxRunning: 4})
		b := e.secondExporter(t, Config{ChunkSize: 2 * testChunk, MaxRunning: 4})
		ctx := testCtx(t)
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, y := a, b
				if i%2 == 1 {
					x, y = b, a
				}
				user := User{ID: fmt.Sprint("u", i%5), Permissions: []string{"exporter"}}
				data := randomBytes(i * 700)
				job, err := x.StartExport(ctx, user, bytes.NewReader(data))
				if err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					if _, err := y.CancelExport(ctx, user, job.ID); err != nil && !isFinished(err) {
						t.Error(err)
					}
				}
				if _, err := y.GetExportStatus(ctx, user, job.ID); err != nil {
					t.Error(err)
				}
				job, err = y.WaitExport(ctx, user, job.ID)
				if err != nil {
					t.Error(err)
					return
				}
				switch job.Status {
				case StatusCancelled:
					if i%7 != 0 {
						t.Errorf("job %d cancelled", i)
					}
				case StatusCompleted:
					d, err := y.OpenExport(ctx, user, job.ID)
					if err != nil {
						t.Error(err)
						return
					}
					got, err := io.ReadAll(d)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("job %d: %d bytes back, err %v", i, len(got), err)
					}
				default:
					t.Errorf("job %d ended %s: %s", i, job.Status, job.Error)
				}
			}()
		}
		wg.Wait()
		e.requireTTLs(t)
	})
}

func isFinished(err error) bool { return err != nil && errors.Is(err, ErrFinished) }

// TestWaitReturnsEndedJob: the job WaitExport returns from the end event
// (without reading the store again) is the job the store holds, whatever
// the metadata and error texts contain.
func TestWaitReturnsEndedJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cs := &countingStore{Store: e.store}
		x := e.exporterOn(t, cs, Config{LeaseTTL: time.Hour})
		md := map[string]string{"a b:c": "1:2 3", "5:": " :x:"}
		for _, fail := range []error{nil, errors.New("3:ab 12: broken")} {
			src := newFeedSource([]byte("some bytes"))
			job, err := x.StartExport(testCtx(t), alice, src, WithMetadata(md))
			require.NoError(t, err)
			waitStatus(t, x, alice, job.ID, StatusRunning)
			got := make(chan *Job, 1)
			cs.mu.Lock()
			cs.calls = 0
			cs.mu.Unlock()
			go func() {
				j, err := x.WaitExport(testCtx(t), alice, job.ID)
				if err != nil {
					t.Error(err)
				}
				got <- j
			}()
			waitWaiting(t, x, job.ID, 1)
			src.end(fail)
			ended := <-got
			cs.mu.Lock()
			require.Equal(t, 1, cs.calls, "one read before the wait, none after the event")
			cs.mu.Unlock()
			stored, err := x.GetExportStatus(testCtx(t), alice, job.ID)
			require.NoError(t, err)
			require.Equal(t, stored, ended)
			require.True(t, ended.Status.Terminal())
		}
	})
}

func TestParseEvent(t *testing.T) {
	id := "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59"
	for _, payload := range []string{"", "x", id, id + " running", "bad completed", id + " completed 99:x"} {
		ev, ok := parseEvent(payload)
		if ok {
			require.Equal(t, id, ev.ID, payload)
			require.Nil(t, ev.Job, "a job that does not decode is left out")
		}
	}
	_, ok := parseEvent(id + " completed")
	require.True(t, ok)
}

// A Shutdown that gives up on a running export records its end, and so does
// the run as it stops: the failure is logged once, and counted once.
func TestShutdownLogsAnAbandonedExportOnce(t *testing.T) {
	e := newEnv(t, "miniredis")
	h := newRecordingHandler()
	m := newMeter(t)
	x := e.exporter(t, Config{Logger: slog.New(h), MeterProvider: m.provider})
	src := newFeedSource([]byte("x"))
	job, err := x.StartExport(testCtx(t), alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, x.Shutdown(ctx), context.Canceled)
	src.requireClosedOnce(t)
	var failed int
	for _, r := range h.snapshot() {
		if r.msg == "export failed" {
			failed++
		}
	}
	require.Equal(t, 1, failed)
	require.Equal(t, int64(1), m.value(t, "exporter.exports.ended", ended(StatusFailed)))
	job = waitFor(t, x, alice, job.ID, StatusFailed)
	require.Contains(t, job.Error, ErrClosed.Error())
}

// A cancelled export whose source ignores Close is still in its Read when
// Shutdown gives up: it stays cancelled, and counts and logs as cancelled,
// not as failed by the shutdown.
func TestShutdownAfterCancelKeepsTheCancel(t *testing.T) {
	e := newEnv(t, "miniredis")
	h := newRecordingHandler()
	m := newMeter(t)
	x, err := New(e.store, Config{ChunkSize: testChunk, MeterProvider: m.provider, Logger: slog.New(h)})
	require.NoError(t, err)
	src := newStubborn([]byte("abc"), "")
	job, err := x.StartExport(testCtx(t), alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	_, err = x.CancelExport(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	release := time.AfterFunc(300*time.Millisecond, func() { close(src.release) }) // within the grace
	defer release.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, x.Shutdown(ctx), context.Canceled)

	got, err := x.GetExportStatus(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, got.Status)
	require.Equal(t, int64(1), m.value(t, "exporter.exports.ended", ended(StatusCancelled)))
	require.Zero(t, m.value(t, "exporter.exports.ended", ended(StatusFailed)))
	for _, r := range h.snapshot() {
		require.NotEqual(t, "export failed", r.msg, "%+v", r)
	}
}
