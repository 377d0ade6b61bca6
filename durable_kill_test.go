package exporter

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// durableWorkerEnv makes the test binary a worker process of durable
// exports: it enqueues durableKilled exports of kind "rows" and runs them
// with a slow source, prints their ids once each has stored a few chunks,
// and waits to be killed. Its value is the Redis address, or "cluster:"
// and the Cluster's addresses separated by commas.
const durableWorkerEnv = "EXPORTER_TEST_DURABLE_WORKER"

// durableKilled is how many exports the killed worker runs; each is
// durableKilledSize bytes, read a chunk every 10 ms. A worker runs 4 at
// once, so that the rolling restart's exports spread over the workers.
const (
	durableKilled     = 3
	durableKilledSize = 60 * testChunk
	// durableKilledStall is where the killed worker's source stops
	// delivering: past the 3 chunks the test waits for, short of the end.
	durableKilledStall = 10 * testChunk
	durableLease       = 500 * time.Millisecond
	// durableRollingSize is the size of the rolling restart's exports:
	// at a chunk every 10 ms, each takes 3 s or more, longer than the
	// restarts.
	durableRollingSize = 300 * testChunk
)

// dialWorker connects to the servers named by a worker's environment.
func dialWorker(addr string) redis.UniversalClient {
	if addrs, ok := strings.CutPrefix(addr, "cluster:"); ok {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	}
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}

// slowPattern is a Source of pattern bytes, a chunk every 10 ms.
func slowPattern(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
	return pacedPattern(ctx, job, offset, 0)
}

// stallingPattern is slowPattern that stops delivering after
// durableKilledStall bytes, until its export ends: a killed worker's
// exports are all in the middle when it dies, however late each began.
func stallingPattern(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
	return pacedPattern(ctx, job, offset, durableKilledStall)
}

func pacedPattern(ctx context.Context, job *Job, offset, stall int64) (io.Reader, error) {
	var seed byte
	var size int64
	if _, err := fmt.Sscanf(string(job.Args), "%d %d", &seed, &size); err != nil {
		return nil, fmt.Errorf("%w: args %q", ErrPermanent, job.Args)
	}
	return &pacedReader{r: &patternReader{seed: seed, off: offset, size: size}, ctx: ctx, off: offset, stall: stall}, nil
}

type pacedReader struct {
	r     io.Reader
	ctx   context.Context
	off   int64
	stall int64 // the offset where it stops delivering; 0: never
}

func (p *pacedReader) Read(b []byte) (int, error) {
	wait := 10 * time.Millisecond
	if p.stall > 0 && p.off >= p.stall {
		wait = time.Hour
	}
	select {
	case <-time.After(wait):
	case <-p.ctx.Done():
		return 0, context.Cause(p.ctx)
	}
	n, err := p.r.Read(b[:min(len(b), testChunk)])
	p.off += int64(n)
	return n, err
}

func durableWorkerMain(addr string) int {
	client := dialWorker(addr)
	serve := os.Getenv("EXPORTER_TEST_SERVE")
	src := slowPattern
	if serve == "" {
		src = stallingPattern
	}
	x, err := New(NewRedisStore(client).WithPrefix(os.Getenv("EXPORTER_TEST_PREFIX")),
		Config{ChunkSize: testChunk, LeaseTTL: durableLease, MaxRunning: 4, Sources: map[string]Source{"rows": src}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	if n, err := strconv.Atoi(serve); err == nil && n >= 0 {
		return durableServe(ctx, x, n)
	}
	var ids []string
	for i := range durableKilled {
		job, err := x.Enqueue(ctx, alice, "rows", durableArgs(byte(i+1), durableKilledSize))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ids = append(ids, job.ID)
	}
	for _, id := range ids {
		for {
			job, err := x.GetExportStatus(ctx, alice, id)
			if err == nil && job.Bytes >= 3*testChunk {
				break
			}
			time.Sleep(5 * time.Millisecond) // a poll of the worker's own progress
		}
	}
	fmt.Println(strings.Join(ids, " "))
	select {} // until SIGKILL
}

// durableServe is a worker of the rolling restart: it enqueues n exports
// (printing their ids), runs durable exports until SIGTERM, then shuts
// down with a short deadline, handing back what still runs, and exits.
func durableServe(ctx context.Context, x *Exporter, n int) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	var ids []string
	for i := range n {
		job, err := x.Enqueue(ctx, alice, "rows", durableArgs(byte(i+1), durableRollingSize))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ids = append(ids, job.ID)
	}
	fmt.Println("ready", strings.Join(ids, " "))
	<-term
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := x.Shutdown(sctx)
	fmt.Fprintln(os.Stderr, "worker shut down:", err)
	return 0
}

// TestDurableRollingRestart restarts three worker processes one after
// another, each with SIGTERM (Shutdown hands its exports back), while 12
// durable exports run on them: every export completes, none fails, and
// each holds exactly the bytes of an uninterrupted run (nothing lost,
// nothing stored twice).
func TestDurableRollingRestart(t *testing.T) {
	srv, _ := sharedServers(t)
	e := newEnv(t, "redis")
	start := func(enqueue int) (*exec.Cmd, []string) {
		cmd, line := startWorker(t, durableWorkerEnv+"="+srv.Addr, "EXPORTER_TEST_PREFIX="+e.prefix,
			"EXPORTER_TEST_SERVE="+strconv.Itoa(enqueue))
		f := strings.Fields(line)
		require.Equal(t, "ready", f[0])
		return cmd, f[1:]
	}
	const exports = 12
	w0, ids := start(exports)
	workers := []*exec.Cmd{w0}
	for range 2 {
		w, _ := start(0)
		workers = append(workers, w)
	}
	x := e.exporter(t, Config{}) // a reader: it runs nothing
	progress := func() int64 {
		var n int64
		for _, id := range ids {
			if j, err := x.GetExportStatus(testCtx(t), alice, id); err == nil {
				n += j.Bytes
			}
		}
		return n
	}
	for i := range workers {
		before := progress()
		require.Eventually(t, func() bool { return progress() > before+4*testChunk }, 30*time.Second, 5*time.Millisecond,
			"no progress before restarting worker %d", i)
		require.NoError(t, workers[i].Process.Signal(syscall.SIGTERM))
		require.NoError(t, workers[i].Wait())
		workers[i], _ = start(0)
	}
	handedBack := 0
	for i, id := range ids {
		got := requireDurableDone(t, x, alice, &Job{ID: id}, byte(i+1), durableRollingSize)
		handedBack += got.Attempt - 1
	}
	t.Logf("%d exports completed across 3 restarts; %d attempts were handed back", exports, handedBack)
	e.requireTTLs(t)
}

// TestDurableWorkerKilled SIGKILLs a process in the middle of three
// durable exports. Another instance resumes each within LeaseTTL and a
// second of the kill, without anyone reading them; its Source is called
// with the offset that was stored (Job.Bytes); every export completes in
// its second attempt with the bytes and checksum of an uninterrupted run.
// On a standalone server and on the Cluster.
func TestDurableWorkerKilled(t *testing.T) {
	for _, name := range []string{"redis", "cluster"} {
		t.Run(name, func(t *testing.T) {
			srv, cl := sharedServers(t)
			e := newEnv(t, name)
			addr := srv.Addr
			if name == "cluster" {
				addr = "cluster:" + strings.Join(cl.Addrs, ",")
			}
			cmd, line := startWorker(t, durableWorkerEnv+"="+addr, "EXPORTER_TEST_PREFIX="+e.prefix)
			ids := strings.Fields(line)
			require.Len(t, ids, durableKilled)

			require.NoError(t, cmd.Process.Kill())
			killed := time.Now()
			cmd.Wait()

			var mu sync.Mutex
			resumed := map[string]time.Duration{}
			offsets := map[string]int64{}
			src := func(ctx context.Context, job *Job, offset int64) (io.Reader, error) {
				mu.Lock()
				resumed[job.ID] = time.Since(killed)
				offsets[job.ID] = offset
				mu.Unlock()
				if offset != job.Bytes {
					return nil, fmt.Errorf("%w: offset %d, Job.Bytes %d", ErrPermanent, offset, job.Bytes)
				}
				seed, size := parseDurableArgs(t, job.Args)
				return &patternReader{seed: seed, off: offset, size: size}, nil
			}
			b := e.exporter(t, Config{ChunkSize: testChunk, LeaseTTL: durableLease, Sources: map[string]Source{"rows": src}})
			for i, id := range ids {
				got := requireDurableDone(t, b, alice, &Job{ID: id}, byte(i+1), durableKilledSize)
				require.Equal(t, 2, got.Attempt)
				mu.Lock()
				took, off := resumed[id], offsets[id]
				mu.Unlock()
				t.Logf("export %d resumed %v after the kill, at offset %d", i, took, off)
				require.LessOrEqual(t, took, durableLease+time.Second)
				require.GreaterOrEqual(t, off, int64(3*testChunk))
				require.LessOrEqual(t, off, int64(durableKilledStall))
			}
			e.requireTTLs(t)
		})
	}
}
