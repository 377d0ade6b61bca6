package exporter_test

// The tests in this file use the package as its users do: only its
// exported API, on a store built the way a service builds one.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/exporterkit/exporter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

var user = exporter.User{ID: "alice", Permissions: []string{"exporter"}}

// newMiniStore returns a RedisStore on a miniredis of its own.
func newMiniStore(t *testing.T) (*exporter.RedisStore, *miniredis.Miniredis) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	return exporter.NewRedisStore(c), mr
}

// newExporter returns an Exporter on store, shut down when the test ends.
func newExporter(t *testing.T, store exporter.Store, cfg exporter.Config) *exporter.Exporter {
	x, err := exporter.New(store, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, x.Shutdown(ctx))
	})
	return x
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// closeCounter is a source that counts its Close calls.
type closeCounter struct {
	io.Reader
	closes atomic.Int32
}

func (c *closeCounter) Close() error {
	c.closes.Add(1)
	return nil
}

// TestNewConfig: New validates the Config and names the bad field, and
// does no I/O.
func TestNewConfig(t *testing.T) {
	store, mr := newMiniStore(t)
	_, err := exporter.New(nil, exporter.Config{})
	require.ErrorIs(t, err, exporter.ErrInvalid)
	_, err = exporter.New(exporter.NewRedisStore(nil), exporter.Config{})
	require.ErrorIs(t, err, exporter.ErrInvalid)
	_, err = exporter.New(store.WithPrefix("a{b}"), exporter.Config{})
	require.ErrorIs(t, err, exporter.ErrInvalid)
	bad := map[string]exporter.Config{
		"ChunkSize":  {ChunkSize: 1023},
		"ChunkSize ": {ChunkSize: 16<<20 + 1},
		"MaxBytes":   {MaxBytes: -1},
		"MaxRunning": {MaxRunning: -1},
		"MaxPending": {MaxPending: -1},
		"MaxPerUser": {MaxPerUser: -1},
		"Retention":  {Retention: -time.Second},
		"LeaseTTL":   {LeaseTTL: time.Millisecond},
		"Retention ": {Retention: time.Second, LeaseTTL: time.Minute},
	}
	for field, cfg := range bad {
		_, err := exporter.New(store, cfg)
		require.ErrorIs(t, err, exporter.ErrInvalid, field)
		require.Contains(t, err.Error(), "exporter: new: invalid argument: Config."+strings.TrimSpace(field))
	}
	x, err := exporter.New(store, exporter.Config{})
	require.NoError(t, err)
	require.NoError(t, x.Shutdown(ctxFor(t)))
	require.Empty(t, mr.Keys(), "New and Shutdown do no I/O")
}

// TestErrorsSayItOnce: an error names the package once, then the
// operation and the job, then the sentinel's text and the detail; and
// errors.Is finds the sentinel.
func TestErrorsSayItOnce(t *testing.T) {
	store, _ := newMiniStore(t)
	x := newExporter(t, store, exporter.Config{})
	ctx := ctxFor(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	job, err := x.StartExport(ctx, user, pr)
	require.NoError(t, err)
	unknown := "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59"

	_, errStart := x.StartExport(ctx, exporter.User{ID: "bob"}, strings.NewReader("x"))
	_, errStatus := x.GetExportStatus(ctx, user, unknown)
	_, errOpen := x.OpenExport(ctx, user, job.ID)
	_, errList := x.ListExports(ctx, user, exporter.ListOptions{Limit: -1})
	for _, tt := range []struct {
		err  error
		is   error
		text string
	}{
		{errStart, exporter.ErrForbidden, `exporter: start: forbidden: user "bob" lacks permission "exporter"`},
		{errStatus, exporter.ErrNotFound, "exporter: status " + unknown + ": export not found"},
		{errOpen, exporter.ErrNotReady, "exporter: open " + job.ID + ": export not completed: status "},
		{errList, exporter.ErrInvalid, "exporter: list: invalid argument: Limit -1"},
	} {
		require.ErrorIs(t, tt.err, tt.is)
		require.True(t, strings.HasPrefix(tt.err.Error(), tt.text), "%q does not begin with %q", tt.err, tt.text)
		require.Equal(t, 1, strings.Count(tt.err.Error(), "exporter:"), "%q", tt.err)
	}
}

// TestPermissionChecker: a custom checker decides both permissions, and an
// error from it denies.
func TestPermissionChecker(t *testing.T) {
	store, _ := newMiniStore(t)
	boom := errors.New("directory down")
	var mu sync.Mutex
	fail := false
	checker := exporter.PermissionFunc(func(_ context.Context, u exporter.User, p string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return false, boom
		}
		return u.ID == "alice" && p == "export" || u.ID == "root" && p == "admin", nil
	})
	x := newExporter(t, store, exporter.Config{Permission: "export", AdminPermission: "admin", Permissions: checker})
	ctx := ctxFor(t)
	job, err := x.StartExport(ctx, exporter.User{ID: "alice"}, strings.NewReader("x"))
	require.NoError(t, err)
	_, err = x.StartExport(ctx, exporter.User{ID: "bob", Permissions: []string{"export"}}, strings.NewReader("x"))
	require.ErrorIs(t, err, exporter.ErrForbidden, "the checker, not User.Permissions, decides")
	_, err = x.GetExportStatus(ctx, exporter.User{ID: "root"}, job.ID)
	require.NoError(t, err)

	mu.Lock()
	fail = true
	mu.Unlock()
	_, err = x.StartExport(ctx, exporter.User{ID: "alice"}, strings.NewReader("x"))
	require.ErrorIs(t, err, exporter.ErrForbidden)
	require.ErrorIs(t, err, boom)
	_, err = x.GetExportStatus(ctx, exporter.User{ID: "root"}, job.ID)
	require.ErrorIs(t, err, exporter.ErrForbidden, "an admin check that fails denies")
	require.ErrorIs(t, err, boom)
	_, err = x.GetExportStatus(ctx, exporter.User{ID: "alice"}, job.ID)
	require.NoError(t, err, "the owner needs no check")
	// A stranger cannot tell an unknown id from another's job by the error.
	const unknown = "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59"
	_, errTheirs := x.GetExportStatus(ctx, exporter.User{ID: "mallory"}, job.ID)
	_, errUnknown := x.GetExportStatus(ctx, exporter.User{ID: "mallory"}, unknown)
	require.ErrorIs(t, errTheirs, exporter.ErrForbidden)
	require.ErrorIs(t, errUnknown, exporter.ErrForbidden)
	require.Equal(t, strings.ReplaceAll(errTheirs.Error(), job.ID, "ID"), strings.ReplaceAll(errUnknown.Error(), unknown, "ID"))
}

// TestStartInput: bad input to StartExport is refused with the documented
// sentinel, the source is closed, and nothing is written.
func TestStartInput(t *testing.T) {
	store, mr := newMiniStore(t)
	x := newExporter(t, store, exporter.Config{MaxBytes: 1 << 20})
	ctx := ctxFor(t)
	big := map[string]string{}
	for i := range exporter.MaxMetadataEntries + 1 {
		big[fmt.Sprint(i)] = "v"
	}
	md := func(k, v string) exporter.StartOption { return exporter.WithMetadata(map[string]string{k: v}) }
	tests := []struct {
		name string
		opt  exporter.StartOption
		want error
	}{
		{"negative total", exporter.WithTotal(-1), exporter.ErrInvalid},
		{"total above MaxBytes", exporter.WithTotal(1<<20 + 1), exporter.ErrTooLarge},
		{"too many metadata entries", exporter.WithMetadata(big), exporter.ErrInvalid},
		{"empty metadata key", md("", "v"), exporter.ErrInvalid},
		{"long metadata key", md(strings.Repeat("k", exporter.MaxMetadataKey+1), "v"), exporter.ErrInvalid},
		{"long metadata value", md("k", strings.Repeat("v", exporter.MaxMetadataValue+1)), exporter.ErrInvalid},
		{"metadata not UTF-8", md("k", "\xff"), exporter.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &closeCounter{Reader: strings.NewReader("never read")}
			_, err := x.StartExport(ctx, user, src, tt.opt)
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, int32(1), src.closes.Load())
		})
	}
	_, err := x.StartExport(ctx, user, nil)
	require.ErrorIs(t, err, exporter.ErrInvalid)
	require.Empty(t, mr.Keys())

	// The limits themselves are accepted, and metadata round-trips exactly.
	meta := map[string]string{"filename": "résumé \"2026\".csv", "content-type": "text/csv; charset=utf-8",
		strings.Repeat("k", exporter.MaxMetadataKey): strings.Repeat("v", exporter.MaxMetadataValue)}
	job, err := x.StartExport(ctx, user, strings.NewReader("x"), exporter.WithMetadata(meta), exporter.WithTotal(1<<20), nil)
	require.NoError(t, err)
	job, err = x.WaitExport(ctx, user, job.ID)
	require.NoError(t, err)
	require.Equal(t, exporter.StatusCompleted, job.Status)
	require.Equal(t, meta, job.Metadata)
}

// TestWatchExportEvery: progress snapshots come at most one per WatchEvery
// interval, however fast the export writes; the end is not held back.
func TestWatchExportEvery(t *testing.T) {
	store, _ := exporter.NewTestStore(t, "redis")
	const chunk = 1 << 10
	x := newExporter(t, store, exporter.Config{ChunkSize: chunk})
	pr, pw := io.Pipe()
	job, err := x.StartExport(ctxFor(t), user, pr)
	require.NoError(t, err)
	const every = 150 * time.Millisecond
	fed := make(chan struct{})
	go func() { // a chunk every 5 ms for about a second
		defer close(fed)
		for range 200 {
			if _, err := pw.Write(make([]byte, chunk)); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // the pace of the source under test
		}
		pw.Close()
	}()
	var at []time.Time
	var last *exporter.Job
	for j, err := range x.WatchExport(ctxFor(t), user, job.ID, exporter.WatchEvery(every)) {
		require.NoError(t, err)
		at, last = append(at, time.Now()), j
	}
	<-fed
	require.Equal(t, exporter.StatusCompleted, last.Status)
	require.Equal(t, int64(200*chunk), last.Bytes)
	require.GreaterOrEqual(t, len(at), 3, "no progress snapshot between the first and the end")
	// Every snapshot but the last (the end) came at least every after
	// the one before.
	for i := 1; i < len(at)-1; i++ {
		require.GreaterOrEqual(t, at[i].Sub(at[i-1]), every, "snapshot %d of %d", i, len(at))
	}
}
