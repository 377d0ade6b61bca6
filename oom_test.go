package exporter

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// eventLog records every event published on a store's channel.
type eventLog struct {
	mu   sync.Mutex
	evs  []Event
	done chan struct{}
}

// recordEvents subscribes client to the events of store until the test
// ends.
func recordEvents(t *testing.T, client *redis.Client, store *RedisStore) *eventLog {
	t.Helper()
	ps := client.Subscribe(testCtx(t), store.eventsChannel())
	_, err := ps.Receive(testCtx(t))
	require.NoError(t, err)
	l := &eventLog{done: make(chan struct{})}
	go func() { // owned: the cleanup closes ps and waits for it
		defer close(l.done)
		for m := range ps.Channel() {
			if ev, ok := parseEvent(m.Payload); ok {
				l.mu.Lock()
				l.evs = append(l.evs, ev)
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		ps.Close()
		<-l.done
	})
	return l
}

// ends returns the terminal events of job id so far.
func (l *eventLog) ends(id string) []Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Status
	for _, ev := range l.evs {
		if ev.ID == id && ev.Status.Terminal() {
			out = append(out, ev.Status)
		}
	}
	return out
}

// TestOutOfMemory runs a real Redis above its maxmemory under noeviction,
// where it refuses a script's first write that may grow memory. There, a
// new export and new bytes are refused, but every ending is recorded, and
// announced only once it is: a cancel succeeds, an export whose chunk
// write was refused fails at once, naming the cause, and a lease that
// lapses reads failed. Each ending is announced once; reads announce
// nothing more; and nothing a caller saw as terminal changes once memory
// is back.
func TestOutOfMemory(t *testing.T) {
	srv := redistest.StartT(t, redistest.Options{})
	ctx := testCtx(t)
	admin := faultClient(t, srv.Addr)
	const prefix = "oom:"
	storeA := NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix)
	storeB := NewRedisStore(faultClient(t, srv.Addr)).WithPrefix(prefix)
	cfg := Config{ChunkSize: testChunk, LeaseTTL: 2 * time.Second}
	xa, xb := newExporterT(t, storeA, cfg), newExporterT(t, storeB, cfg)
	events := recordEvents(t, admin, storeA)

	cancelled, failing := newFeedSource(fill('A', 2*testChunk)), newFeedSource(fill('B', 2*testChunk))
	j1, err := xa.StartExport(ctx, alice, cancelled)
	require.NoError(t, err)
	j2, err := xa.StartExport(ctx, alice, failing)
	require.NoError(t, err)
	for _, id := range []string{j1.ID, j2.ID} {
		require.Eventually(t, func() bool {
			j, err := xb.GetExportStatus(ctx, alice, id)
			return err == nil && j.Bytes == 2*testChunk
		}, 10*time.Second, time.Millisecond)
	}
	// A job whose instance is gone: its lease lapses while memory is full.
	orphan, _ := newStoreJob(t, &env{store: storeA}, 200*time.Millisecond)

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err())
	defer admin.ConfigSet(ctx, "maxmemory", "0")

	_, err = xb.StartExport(ctx, alice, bytes.NewReader([]byte("x")))
	require.ErrorContains(t, err, "OOM", "a new export is refused")

	job, err := xb.CancelExport(ctx, alice, j1.ID)
	require.NoError(t, err, "a cancel frees memory: it is recorded")
	require.Equal(t, StatusCancelled, job.Status)
	waitFor(t, xa, alice, j1.ID, StatusCancelled)
	cancelled.requireClosedOnce(t)

	failing.feed(fill('B', testChunk))
	job = waitFor(t, xb, alice, j2.ID, StatusFailed)
	require.Contains(t, job.Error, "OOM", "the failure names its cause")
	require.Equal(t, CodeStore, job.ErrorCode)

	time.Sleep(300 * time.Millisecond) // the orphan's lease lapses
	for range 5 {
		for _, id := range []string{j1.ID, j2.ID, orphan.ID} {
			_, err := xb.GetExportStatus(ctx, alice, id)
			require.NoError(t, err)
		}
	}
	job, err = xb.GetExportStatus(ctx, alice, orphan.ID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, job.Status)
	require.ErrorIs(t, job.Err(), ErrWorkerLost)

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "0").Err())
	want := map[string]Status{j1.ID: StatusCancelled, j2.ID: StatusFailed, orphan.ID: StatusFailed}
	for id, st := range want {
		job, err := xb.GetExportStatus(ctx, alice, id)
		require.NoError(t, err)
		require.Equal(t, st, job.Status, "job %s changed after it read terminal", id)
		require.Eventually(t, func() bool { return len(events.ends(id)) > 0 }, 5*time.Second, time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // any further event would have arrived
	for id, st := range want {
		require.Equal(t, []Status{st}, events.ends(id), "job %s: one announcement of what is stored", id)
	}
}
