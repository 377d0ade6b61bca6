package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/exporterkit/exporter/internal/syncbuf"
)

// The binary under test and the Redis it talks to, set up by TestMain.
var (
	binary    string
	redisAddr string // "" when redis-server is missing and not required
)

// TestMain builds exportctl once (with -race when the tests run with it,
// so the tool's own races are caught too; with -cover when
// EXPORTCTL_COVERDIR names a directory for its coverage data), starts one
// redis-server for every test (each test has its own key prefix), runs
// the tests and then checks that the in-process ones leaked no goroutine.
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "exportctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	srv, err := redistest.Start(redistest.Options{})
	switch {
	case errors.Is(err, redistest.ErrNotInstalled) && !redistest.Required():
		fmt.Fprintf(os.Stderr, "exportctl tests: %v: the tests that need Redis are skipped\n", err)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		return 1
	default:
		redisAddr = srv.Addr
	}
	code := m.Run()
	if srv != nil {
		if err := srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "redis-server:", err)
			code = max(code, 1)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

func build(dir string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building exportctl needs the go command on PATH: %w", err)
	}
	binary = filepath.Join(dir, "exportctl")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	if os.Getenv("EXPORTCTL_COVERDIR") != "" {
		args = append(args, "-cover")
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// testEnv runs the binary against the shared Redis under a key prefix of
// its own, as one user.
type testEnv struct {
	t      *testing.T
	addr   string // of the Redis: the shared one unless a test has its own
	prefix string
	user   string
	dir    string // a temporary directory for the test's files
}

var prefixes atomic.Int64

// newEnv returns an environment as user "alice" with a fresh prefix. It
// skips the test when there is no Redis (TestMain failed it already when
// Redis is required).
func newEnv(t *testing.T) *testEnv {
	t.Helper()
	if redisAddr == "" {
		t.Skip("redis-server is not installed")
	}
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return &testEnv{
		t:      t,
		addr:   redisAddr,
		prefix: fmt.Sprintf("exportctl-test:%d:%s:", prefixes.Add(1), name),
		user:   "alice",
		dir:    t.TempDir(),
	}
}

// as returns the same environment as another user.
func (e *testEnv) as(user string) *testEnv {
	c := *e
	c.user = user
	return &c
}

// args puts the connection flags before args.
func (e *testEnv) args(args ...string) []string {
	return append([]string{"-redis", "redis://" + e.addr + "/0", "-prefix", e.prefix, "-user", e.user}, args...)
}

// result is a finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// processTimeout bounds every run of the binary: a hung process fails its
// test instead of the whole test binary.
const processTimeout = 60 * time.Second

// runBinary runs the binary with exactly args (no connection flags) and waits
// for it.
func runBinary(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), processTimeout)
	defer cancel()
	cmd := binaryCommand(ctx, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("exportctl %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	res := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String(), took: time.Since(began)}
	require.NoError(t, ctx.Err(), "exportctl %s ran out of time\n%s", strings.Join(args, " "), res)
	return res
}

func binaryCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	// A -race binary sleeps 1 s before a clean exit (for late reports)
	// unless told otherwise; a race still makes it exit 66.
	env := append(os.Environ(), "REDIS_URL=", "EXPORTCTL_USER=", "TERM=dumb", "GORACE=atexit_sleep_ms=20")
	if dir := os.Getenv("EXPORTCTL_COVERDIR"); dir != "" {
		env = append(env, "GOCOVERDIR="+dir)
	}
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs the binary in e and waits for it.
func (e *testEnv) run(args ...string) result {
	e.t.Helper()
	return runBinary(e.t, nil, e.args(args...)...)
}

// runIn runs the binary in e with stdin.
func (e *testEnv) runIn(stdin io.Reader, args ...string) result {
	e.t.Helper()
	return runBinary(e.t, stdin, e.args(args...)...)
}

// want runs the binary in e and requires exit code code.
func (e *testEnv) want(code int, args ...string) result {
	e.t.Helper()
	res := e.run(args...)
	require.Equal(e.t, code, res.code, "exportctl %s\n%s", strings.Join(args, " "), res)
	return res
}

// process is the binary running in the background: its stdout arrives
// line by line, its stdin stays open until closed.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout, line by line
	outEOF chan struct{} // closed when stdout is drained
	stdout strings.Builder
	stderr syncbuf.Buffer
	done   chan struct{} // closed when the process was waited for
	res    result
	cancel context.CancelFunc
	feeds  sync.WaitGroup // writers to stdin
}

// startProcess starts the binary in e with args; with pipeStdin its stdin
// is a pipe that stays open (process.stdin). The process is killed and
// waited for when the test ends, if the test did not wait for it.
func (e *testEnv) startProcess(pipeStdin bool, args ...string) *process {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), processTimeout)
	p := &process{t: e.t, lines: make(chan string, 1024), outEOF: make(chan struct{}),
		done: make(chan struct{}), cancel: cancel}
	p.cmd = binaryCommand(ctx, e.args(args...)...)
	p.cmd.Stderr = &p.stderr
	var err error
	if pipeStdin {
		p.stdin, err = p.cmd.StdinPipe()
		require.NoError(e.t, err)
	}
	out, err := p.cmd.StdoutPipe()
	require.NoError(e.t, err)
	require.NoError(e.t, p.cmd.Start())
	go func() {
		defer close(p.outEOF)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.stdout.WriteString(sc.Text() + "\n")
			select {
			case p.lines <- sc.Text():
			default: // nobody reads them; they are in p.stdout
			}
		}
	}()
	began := time.Now()
	go func() {
		<-p.outEOF // the pipe must be drained before Wait
		err := p.cmd.Wait()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			p.stderr.WriteString("\n(wait: " + err.Error() + ")")
		}
		p.res = result{code: p.cmd.ProcessState.ExitCode(), stdout: p.stdout.String(),
			stderr: p.stderr.String(), took: time.Since(began)}
		cancel()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		if p.stdin != nil {
			p.stdin.Close()
		}
		p.cancel() // kills it if it still runs
		<-p.done
		p.feeds.Wait() // their writes failed when the process ended
	})
	return p
}

// line returns the next line of the process's stdout, failing the test
// if none comes within d.
func (p *process) line(d time.Duration) string {
	p.t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-p.done:
		p.t.Fatalf("the process ended without another line\n%s", p.res)
	case <-time.After(d):
		p.t.Fatalf("no line on stdout within %v; stderr so far:\n%s", d, p.stderr.String())
	}
	return ""
}

// wait waits up to d for the process to exit and returns how it did.
func (p *process) wait(d time.Duration) result {
	p.t.Helper()
	select {
	case <-p.done:
		return p.res
	case <-time.After(d):
		p.t.Fatalf("the process did not exit within %v; stderr so far:\n%s", d, p.stderr.String())
	}
	return result{}
}

// randomFile writes n random bytes to a new file in e's directory and
// returns its path and content.
func (e *testEnv) randomFile(name string, n int) (string, []byte) {
	e.t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	path := filepath.Join(e.dir, name)
	require.NoError(e.t, os.WriteFile(path, data, 0o600))
	return path, data
}

// startFile runs `start path` to its end, requires exit 0 and returns the
// export's id.
func (e *testEnv) startFile(path string) string {
	e.t.Helper()
	res := e.want(exitOK, "start", "-q", path)
	id := firstLine(res.stdout)
	require.True(e.t, exporter.ValidID(id), "first line of stdout is not an id: %q", res.stdout)
	return id
}

// status returns the job as `status -json` prints it.
func (e *testEnv) status(id string) *exporter.Job {
	e.t.Helper()
	res := e.want(exitOK, "-json", "status", id)
	return decodeJob(e.t, res.stdout)
}

// waitRunning waits until the export runs with at least minBytes stored.
func (e *testEnv) waitRunning(id string, minBytes int64) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		res := e.run("-json", "status", id)
		if res.code != exitOK {
			return false
		}
		job := decodeJob(e.t, res.stdout)
		return job.Status == exporter.StatusRunning && job.Bytes >= minBytes
	}, 20*time.Second, 50*time.Millisecond, "export %s never ran with %d bytes", id, minBytes)
}

func decodeJob(t *testing.T, line string) *exporter.Job {
	t.Helper()
	var job exporter.Job
	require.NoError(t, json.Unmarshal([]byte(line), &job), "not a Job: %q", line)
	require.True(t, exporter.ValidID(job.ID), "Job without an id: %q", line)
	return &job
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func sha256sum(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// feed writes n random bytes to the process's stdin in the background;
// the pipe stays open afterwards. The write ends when the process has read
// it all, or with an error when the process ends.
func (p *process) feed(n int) {
	data := make([]byte, n)
	_, _ = rand.Read(data)
	p.feeds.Go(func() { _, _ = p.stdin.Write(data) })
}
