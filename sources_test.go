package exporter

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stubbornSource serves data, then blocks in Read until released, ignoring
// everything else; its Close, if it has one, can block or fail.
type stubbornSource struct {
	data     []byte
	release  chan struct{} // closed by the test: Read returns io.EOF
	closeHow string        // "", "block", "error", "panic"
	closed   chan struct{}
	once     sync.Once
}

func newStubborn(data []byte, closeHow string) *stubbornSource {
	return &stubbornSource{data: data, release: make(chan struct{}), closeHow: closeHow, closed: make(chan struct{})}
}

func (s *stubbornSource) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.release
	return 0, io.EOF
}

func (s *stubbornSource) Close() error {
	s.once.Do(func() { close(s.closed) })
	switch s.closeHow {
	case "block":
		<-s.release
	case "error":
		return errors.New("close failed")
	case "panic":
		panic("close panicked")
	}
	return nil
}

// readerOnly hides Close: the Exporter cannot unblock its Read.
type readerOnly struct{ io.Reader }

// TestSourceCloseMisbehaves: a Close that fails or panics does not change
// the export's outcome or take the process down.
func TestSourceCloseMisbehaves(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{ChunkSize: testChunk})
	for _, how := range []string{"error", "panic"} {
		src := newStubborn([]byte("payload"), how)
		close(src.release)
		job, err := x.StartExport(testCtx(t), alice, src)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, waitFor(t, x, alice, job.ID, StatusCompleted).Status)
		<-src.closed
	}
	// A refused start closes the source too, panic or not.
	src := newStubborn(nil, "panic")
	_, err := x.StartExport(testCtx(t), anon, src)
	require.ErrorIs(t, err, ErrUnauthenticated)
	<-src.closed
}

// TestSourceCloseBlocks: a Close that blocks does not hold the export's
// outcome, and Shutdown reports it instead of waiting forever.
func TestSourceCloseBlocks(t *testing.T) {
	e := newEnv(t, "miniredis")
	x, err := New(e.store, Config{ChunkSize: testChunk})
	require.NoError(t, err)
	src := newStubborn([]byte("payload"), "block")
	job, err := x.StartExport(testCtx(t), alice, strings.NewReader("x"))
	require.NoError(t, err)
	waitFor(t, x, alice, job.ID, StatusCompleted)

	job, err = x.StartExport(testCtx(t), alice, src)
	require.NoError(t, err)
	waitStatus(t, x, alice, job.ID, StatusRunning)
	_, err = x.CancelExport(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	<-src.closed // Close was called, and blocks

	ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = x.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "sources were closed: 1 ")
	require.Less(t, time.Since(start), 100*time.Millisecond+shutdownGrace+time.Second)
	got, err := x.GetExportStatus(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, got.Status)
	close(src.release) // the stuck goroutine returns; goleak checks at the end
}

// TestSourceIgnoresClose: a source that is not a Closer and blocks in Read
// still has its export ended: cancelled by CancelExport at once, or failed
// by Shutdown, which then reports the stuck Read.
func TestSourceIgnoresClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x, err := New(e.store, Config{ChunkSize: testChunk, MaxRunning: 2})
		require.NoError(t, err)
		cancelled := newStubborn([]byte("some"), "")
		failed := newStubborn([]byte("some"), "")
		defer close(failed.release)
		defer close(cancelled.release)
		a, err := x.StartExport(testCtx(t), alice, readerOnly{cancelled})
		require.NoError(t, err)
		b, err := x.StartExport(testCtx(t), alice, readerOnly{failed})
		require.NoError(t, err)
		waitStatus(t, x, alice, a.ID, StatusRunning)
		waitStatus(t, x, alice, b.ID, StatusRunning)

		job, err := x.CancelExport(testCtx(t), alice, a.ID)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, job.Status)

		ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
		defer cancel()
		err = x.Shutdown(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "sources were closed: 2 ")
		for id, want := range map[string]Status{a.ID: StatusCancelled, b.ID: StatusFailed} {
			got, err := x.GetExportStatus(testCtx(t), alice, id)
			require.NoError(t, err)
			require.Equal(t, want, got.Status)
		}
		e.requireTTLs(t)
	})
}
