package browsertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/stretchr/testify/require"
)

// Timeouts of the server harness, generous for a small CI machine that
// builds with -race.
const (
	buildTimeout  = 3 * time.Minute  // go build of the server, from a cold cache
	listenTimeout = 30 * time.Second // from exec until "listening on" is printed
	stopTimeout   = 30 * time.Second // from SIGINT until the server exits: its HTTP shutdown (10 s) and export grace (5 s) at most, and slack
	httpTimeout   = 30 * time.Second // one request of the Go client
)

// serverPackage is the example server, relative to the repository root.
const serverPackage = "./examples/httpserver"

// listeningRE matches the line the server prints once it is bound.
var listeningRE = regexp.MustCompile(`listening on (http://\S+)`)

// repoRoot returns the root of the exporter repository: the test runs in
// examples/httpserver/browsertest, three levels below it.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root should be three levels above the test's directory")
	require.Contains(t, string(mod), "module github.com/exporterkit/exporter\n", "%s/go.mod is not the library's", root)
	return root
}

// buildServer builds the example server into a fresh directory and returns
// the binary's path. It builds with -race when the test binary has the race
// detector, so that make test also checks the server for data races: a race
// makes the server exit with status 66, which stopServer reports.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "httpserver")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, serverPackage)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go %s (in %s):\n%s", strings.Join(args, " "), cmd.Dir, out)
	return bin
}

// server is a running example server process.
type server struct {
	URL string // base URL, "http://127.0.0.1:PORT", from its "listening on" line

	cmd     *exec.Cmd
	output  *lineWatcher // its stdout and stderr
	done    chan struct{}
	err     error // of cmd.Wait; read after done is closed
	stopped bool  // stop ran; only the test's goroutine touches it
}

// startServer runs the binary bin with REDIS_URL pointing at redisAddr,
// -addr 127.0.0.1:0 and the flags args, waits for its "listening on"
// line, and registers a cleanup that stops it with SIGINT and fails the
// test unless it exits 0 (unless the test killed it). Its output goes to
// the test log when the test fails.
func startServer(t *testing.T, bin, redisAddr string, args ...string) *server {
	t.Helper()
	out := newLineWatcher(listeningRE)
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+redisAddr)
	cmd.Stdout = out
	cmd.Stderr = out
	// Own process group, so a ^C at the terminal reaches the test and not
	// the server directly; Pdeathsig, so the kernel kills the server if the
	// test binary dies without its cleanup (see internal/redistest).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	s := &server{cmd: cmd, output: out, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("server output:\n%s", out.String())
		}
	})

	select {
	case m := <-out.match:
		s.URL = strings.TrimRight(m[1], "/")
	case <-s.done:
		t.Fatalf("server exited before it listened: %v\n%s", s.err, out.String())
	case <-time.After(listenTimeout):
		t.Fatalf("server printed no %q line within %v\n%s", "listening on http://HOST:PORT", listenTimeout, out.String())
	}
	return s
}

// stop sends SIGINT to the server's process (only that pid) and waits for
// it; the test fails unless it exits with status 0 in time. A server that
// does not exit in stopTimeout is killed, so none is left behind. Only the
// first call does anything.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.stopped {
		return
	}
	s.stopped = true
	select {
	case <-s.done:
		t.Errorf("server exited before the test stopped it: %v", s.err)
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal server: %v", err)
	}
	select {
	case <-s.done:
		if s.err != nil {
			t.Errorf("server did not shut down cleanly on SIGINT: %v", s.err)
		}
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("server did not exit within %v of SIGINT; killed", stopTimeout)
	}
}

// kill ends the server's process (only that pid) with SIGKILL, a crash
// that leaves it no time to end its streams or hand back its exports, and
// waits for it to exit. The cleanup then leaves it alone.
func (s *server) kill(t *testing.T) {
	t.Helper()
	require.False(t, s.stopped, "kill of a server already stopped")
	s.stopped = true
	select {
	case <-s.done:
		t.Fatalf("server exited before the test killed it: %v", s.err)
	default:
	}
	require.NoError(t, s.cmd.Process.Kill())
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Fatalf("server did not exit within %v of SIGKILL", stopTimeout)
	}
}

// apiPrefix is where the server mounts its API (exporterhttp).
const apiPrefix = "/exports"

// job is the part of the server's Job JSON (GET /exports/{id}) that the test
// reads. It is declared here, not taken from the library, because the test
// checks the HTTP API, and so that this module needs no more of the
// library's dependencies than internal/redistest's (none).
type job struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Kind      string `json:"kind"`
	Bytes     int64  `json:"bytes"` // stored
	Read      int64  `json:"read"`  // read from the source
	ChunkSize int64  `json:"chunk_size"`
	Checksum  string `json:"checksum"` // "sha256:<hex>" once completed
}

// getJob fetches GET /exports/{id} as user, with the X-User header, as a
// plain Go client.
func (s *server) getJob(t *testing.T, user, id string) job {
	t.Helper()
	body := s.get(t, user, apiPrefix+"/"+id)
	var j job
	require.NoError(t, json.Unmarshal(body, &j), "GET %s/%s: %s", apiPrefix, id, body)
	require.Equal(t, id, j.ID, "GET %s/%s returned another job", apiPrefix, id)
	return j
}

// get fetches path as user with the X-User header and returns the body; the
// test fails unless the status is 200 OK.
func (s *server) get(t *testing.T, user, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("X-User", user)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "GET %s", path)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "GET %s", path)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", path, truncate(string(body), 500))
	return body
}

// startRedis starts a private redis-server on a free loopback port for the
// test; it skips the test when redis-server is missing, unless
// EXPORTER_REQUIRE_REDIS=1.
func startRedis(t *testing.T) string {
	t.Helper()
	return redistest.StartT(t, redistest.Options{}).Addr
}

// sha256Hex returns the lower-case hex SHA-256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// lineWatcher collects a child process's output, safe for concurrent
// writes and reads, and sends the submatches of the first line matching re
// to match.
type lineWatcher struct {
	re    *regexp.Regexp
	match chan []string // receives one value, buffered

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte // the unterminated tail of the output
	matched bool
}

func newLineWatcher(re *regexp.Regexp) *lineWatcher {
	return &lineWatcher{re: re, match: make(chan []string, 1)}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	if w.matched {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if m := w.re.FindStringSubmatch(line); m != nil {
			w.matched = true
			w.partial = nil
			w.match <- m
			break
		}
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}
