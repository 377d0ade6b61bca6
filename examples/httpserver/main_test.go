package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/internal/syncbuf"
)

// TestMain runs the tests, stops the shared redis-server, then checks that
// no goroutine outlived its test.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping redis-server:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	miniredisLine = regexp.MustCompile(`^embedded miniredis at (redis://127\.0\.0\.1:\d+) \(start a second instance with REDIS_URL=(redis://127\.0\.0\.1:\d+)\)$`)
	listeningLine = regexp.MustCompile(`^listening on (http://127\.0\.0\.1:\d+)$`)
)

// runMain runs run in a goroutine, waits for its "listening on" line and
// returns the URL and its stdout lines so far, and the channel of run's
// result.
func runMain(t *testing.T, ctx context.Context, env map[string]string, args ...string) (url string, lines []string, result chan error) {
	t.Helper()
	stdout := &syncbuf.Buffer{}
	result = make(chan error, 1)
	go func() { // owned: the caller receives from result
		result <- run(ctx, args, func(k string) string { return env[k] }, stdout, t.Output())
	}()
	eventually(t, 20*time.Second, func() bool {
		select {
		case err := <-result:
			t.Fatalf("run returned early: %v; stdout: %q", err, stdout.String())
		default:
		}
		lines = strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
		m := listeningLine.FindStringSubmatch(lines[len(lines)-1])
		if m != nil {
			url = m[1]
		}
		return m != nil
	}, "no listening line")
	return url, lines, result
}

func waitResult(t *testing.T, result chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return 30s after its context was cancelled")
		return nil
	}
}

// TestRun runs the program in process: an instance with an embedded
// miniredis and a second one on it, an export started on one and seen on
// the other, and a shutdown of the second that ends its event stream at
// once (RegisterOnShutdown of CloseStreams) and hands its running export
// back, which the first resumes.
func TestRun(t *testing.T) {
	t.Parallel()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	call := func(method, url, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-User", "alice")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, data
	}
	start := func(url, body string) *exporter.Job {
		t.Helper()
		code, data := call("POST", url+apiPrefix+"/", body)
		require.Equal(t, http.StatusCreated, code, "body %s", data)
		var job exporter.Job
		require.NoError(t, json.Unmarshal(data, &job))
		return &job
	}
	read := func(url, id string) *exporter.Job {
		t.Helper()
		code, data := call("GET", url+apiPrefix+"/"+id, "")
		require.Equal(t, http.StatusOK, code, "body %s", data)
		var job exporter.Job
		require.NoError(t, json.Unmarshal(data, &job))
		return &job
	}

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	url1, lines, result1 := runMain(t, ctx1, nil, "-addr", "127.0.0.1:0")
	require.Len(t, lines, 2, "stdout: %q", lines)
	m := miniredisLine.FindStringSubmatch(lines[0])
	require.NotNil(t, m, "first line %q", lines[0])
	require.Equal(t, m[1], m[2])
	redisURL := m[1]

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	url2, lines2, result2 := runMain(t, ctx2, map[string]string{"REDIS_URL": redisURL},
		"-addr", "127.0.0.1:0", "-grace", "50ms", "-heartbeat", "1s")
	require.Len(t, lines2, 1, "with REDIS_URL only the listening line: %q", lines2)

	code, page := call("GET", url1+"/", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(page), `data-heartbeat-ms="15000"`, "the default heartbeat")
	_, page = call("GET", url2+"/", "")
	require.Contains(t, string(page), `data-heartbeat-ms="1000"`, "-heartbeat 1s")

	// Started on 1, seen on 2.
	job := start(url1, fmt.Sprintf(`{"kind": %q, "args": {"rows": 100}}`, csvKind))
	eventually(t, 10*time.Second, func() bool { return read(url2, job.ID).Status == exporter.StatusCompleted })

	// A slow export started on 2 and followed on 2, when 2 shuts down: the
	// stream ends at once, and whole (its handler returned), not cut when
	// the server gave up waiting for it; the durable export goes on, on 1
	// (which resumes it where 2 stopped if 2 ran it: 2 hands it back once
	// the grace period is over).
	slow := start(url2, fmt.Sprintf(`{"kind": %q, "args": {"rows": 1000000, "rows_per_second": 5000}}`, csvKind))
	req, err := http.NewRequest("GET", url2+apiPrefix+"/"+slow.ID+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("X-User", "alice")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	stopped := time.Now()
	cancel2()
	require.NoError(t, waitResult(t, result2))
	require.Less(t, time.Since(stopped), httpShutdownTimeout, "the shutdown waited for the event stream")
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err, "the stream ended cleanly")
	after := read(url1, slow.ID).Bytes
	eventually(t, 10*time.Second, func() bool {
		j := read(url1, slow.ID)
		require.Equal(t, exporter.StatusRunning, j.Status, "the export stopped with its instance")
		return j.Bytes > after
	})
	code, data := call("DELETE", url1+apiPrefix+"/"+slow.ID, "")
	require.Equal(t, http.StatusOK, code, "body %s", data)

	cancel1()
	require.NoError(t, waitResult(t, result1))
	_, err = client.Get(url1 + "/")
	require.Error(t, err, "the server still answers after run returned")
}

func TestRunStartupErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	noEnv := func(string) string { return "" }

	err := run(ctx, []string{"-h"}, noEnv, io.Discard, io.Discard)
	require.ErrorIs(t, err, flag.ErrHelp)
	for _, args := range [][]string{
		{"-no-such-flag"}, {"extra"}, {"-heartbeat", "0s"}, {"-heartbeat", "-1s"}, {"-lease", "10ms"},
	} {
		var stderr syncbuf.Buffer
		err = run(ctx, args, noEnv, io.Discard, &stderr)
		require.ErrorAs(t, err, new(usageError), "%q", args)
		require.Contains(t, stderr.String(), "Usage: httpserver", "%q", args)
	}

	// A Redis that does not answer, with its password kept out of the error.
	err = run(ctx, nil, func(string) string { return "redis://user:hunter2@127.0.0.1:1/0" }, io.Discard, io.Discard)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
	require.Contains(t, err.Error(), "REDIS_URL")

	// An address that cannot be listened on.
	var stdout syncbuf.Buffer
	err = run(ctx, []string{"-addr", "127.0.0.1:-1"}, noEnv, &stdout, io.Discard)
	require.Error(t, err)
	require.NotContains(t, stdout.String(), "listening on")
}
