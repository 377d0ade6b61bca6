package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
)

// TestQuickstart runs the quick start's service and does what the README
// says with curl: start an export, follow it to its end, download it under
// its filename; without a user the API answers 401; and the service stops
// when its context is done.
func TestQuickstart(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- run(ctx, client, ln) }()
	base := "http://" + ln.Addr().String() + "/exports/"

	do := func(method, url, user, body string) *http.Response {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		require.NoError(t, err)
		if user != "" {
			req.Header.Set("X-User", user)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json") // as the README's curl sends it
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := do("POST", base, "alice", `{"kind":"orders","args":{"rows":1000},"filename":"orders.csv"}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var job exporter.Job
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))

	require.Eventually(t, func() bool {
		resp := do("GET", base+job.ID, "alice", "")
		var j exporter.Job
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&j) == nil && j.Status == exporter.StatusCompleted
	}, 10*time.Second, 10*time.Millisecond)

	resp = do("GET", base+job.ID+"/download", "alice", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Disposition"), `filename="orders.csv"`)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	require.Len(t, lines, 1001)
	require.Equal(t, "id,customer,total", lines[0])
	require.Equal(t, "1000,customer-29,993.99", lines[1000])

	require.Equal(t, http.StatusUnauthorized, do("GET", base+job.ID, "", "").StatusCode)
	require.Equal(t, http.StatusNotFound, do("GET", base+job.ID, "bob", "").StatusCode, "another user's export")
	// Args are the source's to judge: bad ones fail the export at its
	// first attempt (ErrPermanent), with no retry.
	resp = do("POST", base, "alice", `{"kind":"orders","args":{"rows":-1}}`)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var bad exporter.Job
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&bad))
	require.Eventually(t, func() bool {
		var j exporter.Job
		resp := do("GET", base+bad.ID, "alice", "")
		return json.NewDecoder(resp.Body).Decode(&j) == nil && j.Status == exporter.StatusFailed && j.Attempt == 1
	}, 10*time.Second, 10*time.Millisecond)

	cancel()
	select {
	case err := <-ran:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was done")
	}
}

// TestReadmeCurlSendsJSON: the README's POST names its body's type: curl's
// -d alone sends a form, which the API refuses (415).
func TestReadmeCurlSendsJSON(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	posts := 0
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "curl ") && strings.Contains(line, " -d ") {
			posts++
			require.Contains(t, line, "-H 'Content-Type: application/json'", "the README's POST: %s", line)
		}
	}
	require.Positive(t, posts, "the README shows no POST")
}

// TestReadmeQuotesQuickstart: the README's quick start is this program's
// code, verbatim, so that what a reader copies compiles.
func TestReadmeQuotesQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	const marker = "<!-- quoted from examples/quickstart/main.go; TestReadmeQuotesQuickstart checks it -->\n```go\n"
	rest, ok := strings.CutPrefix(string(readme)[max(strings.Index(string(readme), marker), 0):], marker)
	require.True(t, ok, "README.md lacks the quick start's marker")
	block, _, ok := strings.Cut(rest, "```\n")
	require.True(t, ok)
	for _, part := range strings.Split(block, "\n// ...\n") {
		require.Contains(t, string(src), part, "the README's quick start differs from examples/quickstart/main.go")
	}
}
