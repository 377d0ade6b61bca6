package exporter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// completedExport stores data as a completed export of alice.
func completedExport(t *testing.T, x *Exporter, data []byte) *Job {
	t.Helper()
	job, err := x.StartExport(testCtx(t), alice, bytes.NewReader(data),
		WithMetadata(map[string]string{"filename": "report.bin"}))
	require.NoError(t, err)
	return waitFor(t, x, alice, job.ID, StatusCompleted)
}

// TestDownloadMatchesBytesReader drives Read, ReadAt, Seek and WriteTo with
// random operations and compares every answer with bytes.Reader's.
func TestDownloadMatchesBytesReader(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk})
		data := randomBytes(9*testChunk + 77)
		job := completedExport(t, x, data)
		d, err := x.OpenExport(testCtx(t), alice, job.ID)
		require.NoError(t, err)
		defer d.Close()
		ref := bytes.NewReader(data)
		rng := rand.New(rand.NewPCG(1, uint64(len(e.name))))
		for i := range 300 {
			switch op := rng.IntN(4); op {
			case 0:
				// Read may return less than asked (a chunk at a time), as
				// io.Reader allows; io.ReadFull makes the answers comparable.
				p, q := make([]byte, rng.IntN(3*testChunk)), []byte(nil)
				q = make([]byte, len(p))
				n, err := io.ReadFull(d, p)
				m, rerr := io.ReadFull(ref, q)
				require.Equal(t, m, n, "op %d Read", i)
				require.Equal(t, q[:m], p[:n])
				require.Equal(t, rerr, err, "op %d Read error", i)
			case 1:
				off := rng.Int64N(int64(len(data)) + 100)
				p, q := make([]byte, rng.IntN(4*testChunk)), []byte(nil)
				q = make([]byte, len(p))
				n, err := d.ReadAt(p, off)
				m, rerr := ref.ReadAt(q, off)
				require.Equal(t, m, n, "op %d ReadAt(%d, %d)", i, len(p), off)
				require.Equal(t, q[:m], p[:n])
				require.Equal(t, rerr == io.EOF, err == io.EOF, "op %d ReadAt error %v vs %v", i, err, rerr)
			case 2:
				whence := rng.IntN(3)
				off := rng.Int64N(int64(len(data))+10) - 5
				if whence == io.SeekStart {
					off = max(off, 0)
				}
				got, err := d.Seek(off, whence)
				want, rerr := ref.Seek(off, whence)
				require.Equal(t, rerr == nil, err == nil, "op %d Seek(%d, %d): %v vs %v", i, off, whence, err, rerr)
				if err == nil {
					require.Equal(t, want, got)
				}
			case 3:
				if rng.IntN(10) != 0 {
					continue
				}
				var a, b bytes.Buffer
				n, err := d.WriteTo(&a)
				require.NoError(t, err)
				m, err := ref.WriteTo(&b)
				require.NoError(t, err)
				require.Equal(t, m, n)
				require.Equal(t, b.Bytes(), a.Bytes())
			}
		}
	})
}

// TestServeContent serves a download with http.ServeContent: whole,
// ranges, suffix ranges, multiple ranges and If-Range all match the data.
func TestServeContent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk})
		data := randomBytes(5*testChunk + 500)
		job := completedExport(t, x, data)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, err := x.OpenExport(r.Context(), alice, job.ID)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			defer d.Close()
			w.Header().Set("ETag", `"`+d.Job().Checksum+`"`)
			http.ServeContent(w, r, d.Job().Metadata["filename"], d.Job().FinishedAt, d)
		}))
		defer srv.Close()
		get := func(headers ...string) (*http.Response, []byte) {
			req, err := http.NewRequest("GET", srv.URL, nil)
			require.NoError(t, err)
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Set(headers[i], headers[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			return resp, b
		}
		resp, body := get()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, fmt.Sprint(len(data)), resp.Header.Get("Content-Length"))
		require.Equal(t, data, body)

		n := len(data)
		for _, r := range []struct {
			header     string
			start, end int
		}{{"bytes=0-0", 0, 1}, {"bytes=10-99", 10, 100}, {fmt.Sprintf("bytes=%d-", testChunk-1), testChunk - 1, n},
			{"bytes=-700", n - 700, n}, {fmt.Sprintf("bytes=%d-%d", 2*testChunk, 3*testChunk-1), 2 * testChunk, 3 * testChunk}} {
			resp, body := get("Range", r.header)
			require.Equal(t, http.StatusPartialContent, resp.StatusCode, r.header)
			require.Equal(t, data[r.start:r.end], body, r.header)
		}
		resp, body = get("Range", "bytes=0-9,2000-2009")
		require.Equal(t, http.StatusPartialContent, resp.StatusCode)
		require.Contains(t, resp.Header.Get("Content-Type"), "multipart/byteranges")
		require.True(t, bytes.Contains(body, data[0:10]) && bytes.Contains(body, data[2000:2010]))
		resp, _ = get("Range", fmt.Sprintf("bytes=%d-", n+5))
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
		resp, body = get("Range", "bytes=0-9", "If-Range", `"stale"`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "a stale If-Range gets the whole file")
		require.Equal(t, data, body)
	})
}

// corruptStore flips one byte of one chunk as it is read.
type corruptStore struct {
	Store
	chunk int
}

func (c *corruptStore) ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error) {
	chunks, err := c.Store.ReadChunks(ctx, id, first, n)
	out := make([][]byte, len(chunks))
	for i, ch := range chunks {
		out[i] = bytes.Clone(ch)
		if first+i == c.chunk {
			out[i][0] ^= 1
		}
	}
	return out, err
}

// TestDownloadVerifies: a sequential read from offset 0 detects altered or
// missing stored bytes with ErrCorrupt; ranged reads do not pay for it.
func TestDownloadVerifies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		data := randomBytes(3*testChunk + 1)
		x := e.exporter(t, Config{ChunkSize: testChunk})
		job := completedExport(t, x, data)
		bad := e.exporterOn(t, &corruptStore{Store: e.store, chunk: 1}, Config{})
		ctx := testCtx(t)

		d, err := bad.OpenExport(ctx, alice, job.ID)
		require.NoError(t, err)
		got, err := io.ReadAll(d)
		require.ErrorIs(t, err, ErrCorrupt)
		require.Less(t, len(got), len(data), "the last chunk is withheld")
		require.True(t, bytes.Equal(data[:testChunk], got[:testChunk]))
		_, err = d.Read(make([]byte, 1))
		require.ErrorIs(t, err, ErrCorrupt, "the error sticks")
		_, err = d.Seek(0, io.SeekStart)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, d)
		require.ErrorIs(t, err, ErrCorrupt, "WriteTo verifies too")

		// Served whole by http.ServeContent, the corrupt export is cut short,
		// so the client sees the failure even though the status was 200.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d, err := bad.OpenExport(r.Context(), alice, job.ID)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			http.ServeContent(w, r, "", time.Time{}, d)
		}))
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)

		// A chunk that went missing (data altered behind the library's back).
		last := e.store.keys(job.ID)[1]
		require.NoError(t, e.client.RPop(ctx, last).Err())
		d, err = x.OpenExport(ctx, alice, job.ID)
		require.NoError(t, err)
		_, err = io.ReadAll(d)
		require.ErrorIs(t, err, ErrCorrupt)

		// Expired under a reader: not found.
		require.NoError(t, e.client.Del(ctx, e.store.keys(job.ID)...).Err())
		_, err = d.ReadAt(make([]byte, 10), 0)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestDownloadClosedAndConcurrentReadAt: ReadAt is safe concurrently; every
// method fails after Close.
func TestDownloadClosedAndConcurrentReadAt(t *testing.T) {
	e := newEnv(t, "miniredis")
	x := e.exporter(t, Config{ChunkSize: testChunk})
	data := randomBytes(20 * testChunk)
	job := completedExport(t, x, data)
	d, err := x.OpenExport(testCtx(t), alice, job.ID)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 3000)
			for off := int64(g * 100); off < int64(len(data)); off += 2999 {
				n, err := d.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(data[off:off+int64(n)], p[:n]) {
					t.Errorf("ReadAt at %d differs", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "Close is idempotent")
	_, err = d.Read(make([]byte, 1))
	require.Error(t, err)
	_, err = d.ReadAt(make([]byte, 1), 0)
	require.Error(t, err)
	_, err = d.Seek(0, io.SeekStart)
	require.Error(t, err)
}

// TestWaitIsNotified: WaitExport returns when the job ends, well before its
// re-read interval, so it is driven by the notification; and it returns
// ctx's error when ctx ends first.
func TestWaitIsNotified(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		// An hour's lease makes the re-read interval 2 s (its cap).
		x := e.exporter(t, Config{LeaseTTL: time.Hour})
		y := e.secondExporter(t, Config{LeaseTTL: time.Hour})
		require.Equal(t, 2*time.Second, y.pollInterval())
		src := newFeedSource([]byte("some"))
		job, err := x.StartExport(testCtx(t), alice, src)
		require.NoError(t, err)
		waitStatus(t, x, alice, job.ID, StatusRunning)

		short, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
		defer cancel()
		_, err = y.WaitExport(short, alice, job.ID)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		type result struct {
			job *Job
			err error
			at  time.Time
		}
		res := make(chan result, 1)
		go func() {
			j, err := y.WaitExport(testCtx(t), alice, job.ID)
			res <- result{j, err, time.Now()}
		}()
		waitWaiting(t, y, job.ID, 1)
		ended := time.Now()
		src.end(nil)
		r := <-res
		require.NoError(t, r.err)
		require.Equal(t, StatusCompleted, r.job.Status)
		require.Less(t, r.at.Sub(ended), time.Second, "woken by the notification, not the 2 s re-read")
	})
}

// TestWaitAcrossShutdown: a WaitExport in progress when its Exporter shuts
// down, and one started afterwards, both still see the job end (on a
// subscription of their own).
func TestWaitAcrossShutdown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		subs := &subscribeCounter{Store: e.store}
		x, err := New(subs, Config{LeaseTTL: time.Hour})
		require.NoError(t, err)
		subs.listener = x.base
		y := e.secondExporter(t, Config{})
		src := newFeedSource([]byte("x"))
		job, err := y.StartExport(testCtx(t), alice, src)
		require.NoError(t, err)
		waitStatus(t, y, alice, job.ID, StatusRunning)

		results := make(chan *Job, 2)
		wait := func() {
			j, err := x.WaitExport(testCtx(t), alice, job.ID)
			if err != nil {
				t.Error(err)
			}
			results <- j
		}
		go wait()
		waitWaiting(t, x, job.ID, 1)
		require.NoError(t, x.Shutdown(testCtx(t)))
		go wait()
		// Both waiters subscribed for themselves: the end comes while both
		// wait.
		require.Eventually(t, func() bool { return subs.n.Load() == 2 }, 10*time.Second, time.Millisecond)
		src.end(nil)
		for range 2 {
			select {
			case j := <-results:
				require.Equal(t, StatusCompleted, j.Status)
			case <-time.After(time.Second):
				t.Fatal("a waiter missed the end (the re-read interval is 2 s)")
			}
		}
	})
}

// subscribeCounter counts the subscriptions its Store made, but for those
// of the Exporter's listener (made under its context, listener).
type subscribeCounter struct {
	Store
	listener context.Context
	n        atomic.Int32
}

func (s *subscribeCounter) Subscribe(ctx context.Context) (Subscription, error) {
	sub, err := s.Store.Subscribe(ctx)
	if err == nil && ctx != s.listener {
		s.n.Add(1)
	}
	return sub, err
}

// badWriter claims to have written more than it was given.
type badWriter struct{}

func (badWriter) Write(p []byte) (int, error) { return len(p) + 1, nil }

// TestDownloadBadWriterAndSeek: a writer that reports more bytes than it
// was given makes WriteTo (and io.Copy) return ErrInvalid instead of
// panicking, and a Seek whose offset overflows says so; an export whose
// data was evicted says so plainly on download.
func TestDownloadBadWriterAndSeek(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		x := e.exporter(t, Config{ChunkSize: testChunk})
		job := completedExport(t, x, randomBytes(3*testChunk+1))
		d, err := x.OpenExport(ctx, alice, job.ID)
		require.NoError(t, err)
		defer d.Close()
		_, err = d.WriteTo(badWriter{})
		require.ErrorIs(t, err, ErrInvalid)
		_, err = d.Seek(0, io.SeekStart)
		require.NoError(t, err)
		_, err = io.Copy(badWriter{}, d)
		require.ErrorIs(t, err, ErrInvalid)

		_, err = d.Seek(10, io.SeekStart)
		require.NoError(t, err)
		_, err = d.Seek(math.MaxInt64, io.SeekCurrent)
		require.ErrorIs(t, err, ErrInvalid)
		require.ErrorContains(t, err, "overflows")
		_, err = d.Seek(math.MaxInt64, io.SeekEnd)
		require.ErrorContains(t, err, "overflows")

		require.NoError(t, e.client.Del(ctx, e.store.keys(job.ID)[1]).Err()) // evicted
		d, err = x.OpenExport(ctx, alice, job.ID)
		require.NoError(t, err)
		defer d.Close()
		_, err = io.ReadAll(d)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, "evicted or deleted")
	})
}
