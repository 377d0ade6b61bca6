package exporter

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// workerEnv makes the test binary a worker process: it starts one export
// whose source never ends, prints the job id and waits to be killed.
const workerEnv = "EXPORTER_TEST_WORKER"

func workerMain(addr string) int {
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	x, err := New(NewRedisStore(client).WithPrefix(os.Getenv("EXPORTER_TEST_PREFIX")),
		Config{ChunkSize: testChunk, LeaseTTL: 500 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	src := newFeedSource(make([]byte, 3*testChunk))
	job, err := x.StartExport(context.Background(), alice, src)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for src.reads.Load() < 3*testChunk {
		time.Sleep(time.Millisecond)
	}
	fmt.Println(job.ID)
	select {} // until SIGKILL
}

// startWorker runs this test binary as a worker process with env added to
// its environment, and returns it with the first line it prints. It is
// killed when the test ends.
func startWorker(t *testing.T, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	return cmd, line
}

// TestWorkerKilled kills the process that runs an export: its lease lapses
// and every instance then reads the job as failed with ErrWorkerLost, its
// data gone, and a late write with the dead worker's lease is refused.
func TestWorkerKilled(t *testing.T) {
	srv, _ := sharedServers(t)
	e := newEnv(t, "redis")
	cmd, line := startWorker(t, workerEnv+"="+srv.Addr, "EXPORTER_TEST_PREFIX="+e.prefix)
	id := strings.TrimSpace(line)

	x := e.exporter(t, Config{LeaseTTL: 500 * time.Millisecond})
	job := waitStatus(t, x, alice, id, StatusRunning)
	require.Positive(t, job.Bytes)

	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	start := time.Now()
	job, err := x.WaitExport(testCtx(t), alice, id)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, job.Status)
	require.Equal(t, ErrWorkerLost.Error(), job.Error)
	require.ErrorIs(t, job.Err(), ErrWorkerLost)
	require.Positive(t, job.Bytes, "Bytes is not reset when data is removed")
	t.Logf("worker loss seen %v after the kill", time.Since(start))
	n, err := e.client.Exists(testCtx(t), e.store.keys(id)[1]).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the lost job's data was removed")
	e.requireTTLs(t)
}
