// Package redistest starts private redis-server processes on free loopback
// ports for tests and for the benchmark program: a standalone server (Start,
// StartT) and a Redis Cluster of several masters (StartCluster,
// StartClusterT).
//
// Every server binds 127.0.0.1 only, keeps its data and log in its own
// directory, and is started in its own process group with a parent-death
// signal, so a test binary that crashes does not leave servers behind. A
// Server only ever signals the process it started.
//
//	func TestSomething(t *testing.T) {
//		srv := redistest.StartT(t, redistest.Options{})
//		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
//		defer rdb.Close()
//		...
//	}
//
// When redis-server is not installed, the T helpers skip the test, or fail it
// when the environment sets EXPORTER_REQUIRE_REDIS=1 (make test does, so CI
// never passes by skipping).
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They are generous because CI machines are small
// and run the race detector.
const (
	startTimeout = 10 * time.Second // until a started server answers PING
	stopTimeout  = 5 * time.Second  // from SIGTERM until SIGKILL
	bindAttempts = 3                // fresh ports tried when a picked port was taken meanwhile
	logFileName  = "redis.log"
	installHint  = "install it with `apt-get install redis-server redis-tools` " +
		"(as root on Debian or Ubuntu), or run `make test`, which installs it"
)

// ErrNotInstalled is wrapped by the error of Binary, Start and StartCluster
// when redis-server or redis-cli is not on PATH. The T helpers skip the test
// on it unless Required reports true.
var ErrNotInstalled = errors.New("redistest: redis is not installed")

// errStopped is returned by Restart after Stop.
var errStopped = errors.New("redistest: server was stopped")

// errAddrInUse marks a start that failed because the port was taken between
// picking it and the server binding it; Start then retries on a fresh port.
var errAddrInUse = errors.New("redistest: address already in use")

// Required reports whether the environment demands a real Redis: it is true
// when EXPORTER_REQUIRE_REDIS is "1". The T helpers then fail, instead of
// skip, a test when redis-server is missing.
func Required() bool {
	return os.Getenv("EXPORTER_REQUIRE_REDIS") == "1"
}

// Binary returns the path of redis-server found on PATH. Its error wraps
// ErrNotInstalled and says how to install it.
func Binary() (string, error) {
	return lookPath("redis-server")
}

func lookPath(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found on PATH (%v); %s", ErrNotInstalled, name, err, installHint)
	}
	return path, nil
}

// Options configures Start. The zero value starts a server with persistence
// off on a free port in a fresh temporary directory.
type Options struct {
	// Port is the TCP port on 127.0.0.1. Zero picks a free one (and, when
	// Args enable cluster mode, one whose cluster bus port, Port+10000, is
	// free too).
	Port int
	// Args are extra redis-server arguments, such as "--appendonly", "yes".
	// They come after the harness's own and so override them; without a
	// "--save" among them, RDB snapshots are off (--save "").
	Args []string
	// Dir is the data directory, created if missing and kept on Stop. Empty
	// means a fresh temporary directory that Stop removes.
	Dir string
}

// Server is a redis-server process started by Start. Its methods are safe
// for concurrent use; they serialise on the process.
type Server struct {
	// Addr is "127.0.0.1:Port", ready for redis.Options.Addr.
	Addr string
	// Port is the TCP port the server listens on.
	Port int
	// Dir is the server's working and data directory; its log is
	// Dir/redis.log.
	Dir string

	bin    string
	args   []string
	ownDir bool

	mu      sync.Mutex
	proc    *process // the current process; nil before the first start
	stopped bool     // Stop was called; the Server cannot start again
}

// process is one run of redis-server. A goroutine calls cmd.Wait, stores
// err and closes done; err may be read only after done is closed.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	killed bool // ended on purpose (Kill, Stop, Restart, a failed start); guarded by Server.mu
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start starts a redis-server as opts say and returns once it answers PING.
// Its error wraps ErrNotInstalled when redis-server is missing, and includes
// the tail of the server's log when the server did not come up. The caller
// must call Stop.
func Start(opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	// The server chdirs to Dir; paths given to it must be absolute.
	dir, ownDir := opts.Dir, opts.Dir == ""
	if ownDir {
		dir, err = os.MkdirTemp("", "redistest-")
	} else if dir, err = filepath.Abs(dir); err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	cluster := clusterEnabled(opts.Args)

	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(cluster); err != nil {
				break
			}
		}
		s := &Server{
			Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port:   port,
			Dir:    dir,
			bin:    bin,
			args:   serverArgs(port, dir, opts.Args),
			ownDir: ownDir,
		}
		s.mu.Lock()
		err = s.launch()
		s.mu.Unlock()
		if err == nil {
			return s, nil
		}
		if opts.Port != 0 || attempt == bindAttempts || !errors.Is(err, errAddrInUse) {
			break
		}
		// Someone took the port between freePort and the bind: a fresh
		// log, so the next attempt's error shows only its own lines.
		_ = os.Remove(filepath.Join(dir, logFileName))
	}
	if ownDir {
		_ = os.RemoveAll(dir)
	}
	return nil, err
}

// StartT is Start for tests: it registers Stop with t.Cleanup, skips the
// test when redis-server is missing (fails it if Required), and fails the
// test when the server does not come up.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("redistest: stop %s: %v", s.Addr, err)
		}
	})
	return s
}

// StandaloneT starts a default server (no persistence, free port, temporary
// directory) for t; see StartT.
func StandaloneT(t testing.TB) *Server {
	t.Helper()
	return StartT(t, Options{})
}

// skipOrFatal ends the test over a failed start: a skip when Redis is only
// missing and not Required, a failure otherwise.
func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) && !Required() {
		t.Skip(err)
	}
	t.Fatal(err)
}

// PID returns the process id of the running server, or 0 when it is not
// running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop ends the server with SIGTERM, escalating to SIGKILL after 5 s, waits
// for it to exit and removes Dir if Start created it. It returns an error if
// the server had to be killed or exited with a failure on its own (a crash
// the test did not cause). Stop is idempotent; a stopped Server cannot be
// restarted.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.terminateLocked()
	if s.ownDir {
		if rerr := os.RemoveAll(s.Dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("redistest: %w", rerr))
		}
	}
	return err
}

// Kill ends the server with SIGKILL and waits for it to exit: a real crash,
// with no chance to flush anything. Restart brings it back on the same port
// and directory. Kill on a server that is not running does nothing.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return nil
	}
	s.proc.killed = true
	if err := s.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redistest: kill %s: %w", s.Addr, err)
	}
	<-s.proc.done
	return nil
}

// Restart starts the server again on the same Port and Dir with the same
// arguments and returns once it answers PING. A server that is still
// running is first stopped gracefully, as Stop does. Restart after Stop
// returns an error.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("redistest: restart %s: %w", s.Addr, errStopped)
	}
	if err := s.terminateLocked(); err != nil {
		return err
	}
	return s.launch()
}

// runningLocked reports whether the current process has not exited.
func (s *Server) runningLocked() bool {
	return s.proc != nil && !s.proc.exited()
}

// terminateLocked ends the current process gracefully if it runs, and
// reports an exit that was neither requested nor clean.
func (s *Server) terminateLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	if p.exited() {
		if p.err != nil && !p.killed {
			return fmt.Errorf("redistest: %s had exited: %w%s", s.Addr, p.err, s.logTail())
		}
		return nil
	}
	p.killed = true
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redistest: stop %s: %w", s.Addr, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("redistest: stop %s: %w%s", s.Addr, p.err, s.logTail())
		}
		return nil
	case <-timer.C:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("redistest: stop %s: no exit %v after SIGTERM, killed%s", s.Addr, stopTimeout, s.logTail())
}

// launch starts a new process with s.args and waits until it answers PING.
// On failure the process is killed and reaped, and the error carries the
// log's tail; it wraps errAddrInUse when the port was taken.
//
// One goroutine per process calls cmd.Wait and closes done; everything that
// ends the process waits for done, so the goroutine never outlives Stop or
// Kill.
func (s *Server) launch() error {
	logPath := filepath.Join(s.Dir, logFileName)
	// Output before the server opens its logfile (a bad argument, say) goes
	// to the same file; both append, so lines do not overwrite each other.
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	// Own process group: a ^C aimed at the test run reaches the test binary,
	// not the server directly. Pdeathsig: the kernel kills the server when
	// the thread that started it exits. The Go runtime does not end threads
	// except those a goroutine left locked with LockOSThread, so in practice
	// this means "when the test binary dies", however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	_ = out.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	s.proc = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitReady(p); err != nil {
		p.killed = true
		if !p.exited() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		tail := s.logTail()
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("redistest: start redis-server on %s: %w%s", s.Addr, err, tail)
	}
	return nil
}

// waitReady polls PING until the server answers PONG (not LOADING), exits,
// or startTimeout passes. The answer must come from p, not from another
// server that already had the port: INFO's process_id tells.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	want := "process_id:" + strconv.Itoa(p.cmd.Process.Pid) + "\r\n"
	var last error
	for {
		reply, err := do(s.Addr, "PING")
		if err == nil && reply == "PONG" {
			if reply, err = do(s.Addr, "INFO", "server"); err == nil {
				if strings.Contains(reply, want) {
					return nil
				}
				err = errors.New("another process answers on this port")
			}
		} else if err == nil {
			err = fmt.Errorf("PING answered %q", reply)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("server exited: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %w", startTimeout, last)
		}
	}
}

// logTail returns the last lines of the server's log, formatted to append to
// an error, or "" when there is no log.
func (s *Server) logTail() string {
	const maxBytes = 2048
	f, err := os.Open(filepath.Join(s.Dir, logFileName))
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxBytes {
		_, _ = f.Seek(-maxBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	text := strings.TrimSpace(string(b))
	if text == "" {
		return ""
	}
	return "\n--- tail of " + filepath.Join(s.Dir, logFileName) + " ---\n" + text
}

// serverArgs builds the command line: loopback only, foreground, data and
// log in dir, no RDB snapshots unless extra says otherwise, then extra.
func serverArgs(port int, dir string, extra []string) []string {
	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--logfile", filepath.Join(dir, logFileName),
		"--daemonize", "no",
	}
	if !slices.Contains(extra, "--save") {
		args = append(args, "--save", "")
	}
	return append(args, extra...)
}

func clusterEnabled(args []string) bool {
	i := slices.Index(args, "--cluster-enabled")
	return i >= 0 && i+1 < len(args) && args[i+1] == "yes"
}

// freePort returns a port on 127.0.0.1 that was free a moment ago. With
// clusterBus it is below 55535 and port+10000, the cluster bus, is free too.
// The port can be taken again before the server binds it; Start retries.
func freePort(clusterBus bool) (int, error) {
	const tries = 50
	for range tries {
		port, err := listenFree(0)
		if err != nil {
			return 0, err
		}
		if !clusterBus {
			return port, nil
		}
		if port >= 55535 {
			continue
		}
		if _, err := listenFree(port + 10000); err == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("redistest: no free port pair (port, port+10000) on 127.0.0.1 after %d tries", tries)
}

// listenFree listens on 127.0.0.1:port (0 = any), closes, and returns the
// port.
func listenFree(port int) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, fmt.Errorf("redistest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// do sends one command on a fresh connection and returns a simple-string,
// integer or bulk-string reply as text; an error reply becomes an error. It
// keeps the harness free of a client library, whose background goroutines
// would outlive a failed start.
func do(addr string, args ...string) (string, error) {
	const timeout = time.Second // for all of it; callers poll, so a timeout only means "not yet"
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(req.Bytes()); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply %q", line)
	}
}
