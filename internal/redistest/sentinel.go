package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Sentinel groups: a master, its replicas, and redis-sentinel processes
// that watch them and promote a replica when the master dies, as Redis
// Sentinel does in production. Every process is a Server (loopback only,
// own directory, own process group, parent-death signal).

const (
	sentinelMasterName = "redistest"
	// groupTimeout bounds each wait of StartSentinelGroup: the replicas'
	// first sync, and the Sentinels finding the replicas and each other
	// (they announce themselves every 2 s).
	groupTimeout = 20 * time.Second
	// failoverCap bounds WaitFailover when its ctx has no earlier deadline.
	failoverCap = 60 * time.Second
	// Sentinel timing: the master is deemed down after downAfter without a
	// valid reply; short, so that a test sees a failover within seconds.
	sentinelDownAfter       = "1000" // ms
	sentinelFailoverTimeout = "5000" // ms
	sentinelConfName        = "sentinel.conf"
	sentinelInstallHint     = "install it with `apt-get install redis-server redis-tools redis-sentinel` " +
		"(as root on Debian or Ubuntu), or run `make test`, which installs it"
)

// nodeArgs are the arguments of every node of a group. Every node may
// become a master: none waits the default 5 s for more replicas before a
// full sync, so that a replica follows a new master at once.
var nodeArgs = []string{"--repl-diskless-sync-delay", "0"}

// SentinelBinary returns the path of redis-sentinel found on PATH. Its
// error wraps ErrNotInstalled and says how to install it.
func SentinelBinary() (string, error) {
	path, err := exec.LookPath("redis-sentinel")
	if err != nil {
		return "", fmt.Errorf("%w: redis-sentinel not found on PATH (%v); %s", ErrNotInstalled, err, sentinelInstallHint)
	}
	return path, nil
}

// SentinelGroup is a master with replicas, watched by Sentinels, all
// started by StartSentinelGroup. Its methods are safe for concurrent use.
type SentinelGroup struct {
	// Nodes are the data servers: Nodes[0] was started as the master, the
	// others as its replicas. After a failover another node is the master;
	// Master asks the Sentinels which.
	Nodes []*Server
	// Sentinels are the redis-sentinel processes watching the master under
	// MasterName.
	Sentinels []*Server

	mu     sync.Mutex
	former string // the master KillMaster killed last, or "" before any kill
}

// StartSentinelGroup starts a master, replicas redis-server replicas of it
// (--replicaof) and sentinels Sentinels that monitor it with a quorum of a
// majority of them, each on a free loopback port. It returns once every
// replica's link to the master is up and every Sentinel knows every
// replica and every other Sentinel, so that a failover can start as soon
// as the master is down for a second. replicas and sentinels must be at
// least 1. Its error wraps ErrNotInstalled when redis-server or
// redis-sentinel is missing. The caller must call Stop.
func StartSentinelGroup(replicas, sentinels int) (*SentinelGroup, error) {
	if replicas < 1 || sentinels < 1 {
		return nil, fmt.Errorf("redistest: a sentinel group needs at least one replica and one sentinel, not %d and %d", replicas, sentinels)
	}
	if _, err := Binary(); err != nil {
		return nil, err
	}
	bin, err := SentinelBinary()
	if err != nil {
		return nil, err
	}
	g := &SentinelGroup{}
	master, err := Start(Options{Args: nodeArgs})
	if err != nil {
		return nil, err
	}
	g.Nodes = append(g.Nodes, master)
	for range replicas {
		s, err := Start(Options{Args: append(nodeArgs[:len(nodeArgs):len(nodeArgs)], "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))})
		if err != nil {
			return nil, errors.Join(err, g.Stop())
		}
		g.Nodes = append(g.Nodes, s)
	}
	if err := g.waitReplicas(master, replicas); err != nil {
		return nil, errors.Join(err, g.Stop())
	}
	quorum := sentinels/2 + 1
	for range sentinels {
		s, err := startSentinel(bin, master.Port, quorum)
		if err != nil {
			return nil, errors.Join(err, g.Stop())
		}
		g.Sentinels = append(g.Sentinels, s)
	}
	if err := g.waitSentinels(master.Addr, replicas); err != nil {
		return nil, errors.Join(err, g.Stop())
	}
	return g, nil
}

// StartSentinelGroupT is StartSentinelGroup for tests: it registers Stop
// with t.Cleanup, skips the test when redis-server or redis-sentinel is
// missing (fails it if Required), and fails the test when the group does
// not come up.
func StartSentinelGroupT(t testing.TB, replicas, sentinels int) *SentinelGroup {
	t.Helper()
	g, err := StartSentinelGroup(replicas, sentinels)
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("redistest: stop sentinel group: %v", err)
		}
	})
	return g
}

// MasterName is the name the Sentinels monitor the master under, for
// redis.FailoverOptions.MasterName.
func (g *SentinelGroup) MasterName() string { return sentinelMasterName }

// SentinelAddrs returns the Sentinels' addresses, for
// redis.FailoverOptions.SentinelAddrs.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// Master returns the node the Sentinels name as the master now (SENTINEL
// get-master-addr-by-name, asked of each Sentinel in turn until one
// answers). During a failover that may still be a master that is down.
func (g *SentinelGroup) Master() (*Server, error) {
	var errs []error
	for _, s := range g.Sentinels {
		addr, err := masterAddr(s.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Addr, err))
			continue
		}
		return g.node(addr)
	}
	return nil, fmt.Errorf("redistest: no sentinel names the master: %w", errors.Join(errs...))
}

// KillMaster SIGKILLs the current master (see Master) and returns it:
// a crash, with no chance to flush anything to its replicas. WaitFailover
// then waits for another node to take over.
func (g *SentinelGroup) KillMaster() (*Server, error) {
	m, err := g.Master()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.former = m.Addr
	g.mu.Unlock()
	if err := m.Kill(); err != nil {
		return nil, err
	}
	return m, nil
}

// WaitFailover waits until every Sentinel that answers names a master
// other than the one KillMaster killed last, and that node answers ROLE
// as a master; it returns the new master. It fails when KillMaster was not
// called, when ctx is done first (it gives up after a minute in any
// case), and reports what the Sentinels said last and the tails of their
// logs.
func (g *SentinelGroup) WaitFailover(ctx context.Context) (*Server, error) {
	g.mu.Lock()
	former := g.former
	g.mu.Unlock()
	if former == "" {
		return nil, errors.New("redistest: WaitFailover before KillMaster")
	}
	ctx, cancel := context.WithTimeout(ctx, failoverCap)
	defer cancel()
	for {
		m, err := g.failedOver(former)
		if err == nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			var logs strings.Builder
			for _, s := range g.Sentinels {
				logs.WriteString(s.logTail())
			}
			return nil, fmt.Errorf("redistest: no failover from %s: %w (last: %v)%s", former, ctx.Err(), err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// failedOver returns the new master if the Sentinels agree on one other
// than former and it is a master.
func (g *SentinelGroup) failedOver(former string) (*Server, error) {
	agreed := ""
	for _, s := range g.Sentinels {
		addr, err := masterAddr(s.Addr)
		if err != nil {
			continue // a Sentinel that does not answer has no say
		}
		switch {
		case addr == former:
			return nil, fmt.Errorf("sentinel %s still names %s", s.Addr, former)
		case agreed != "" && addr != agreed:
			return nil, fmt.Errorf("sentinels name %s and %s", agreed, addr)
		}
		agreed = addr
	}
	if agreed == "" {
		return nil, errors.New("no sentinel answers")
	}
	m, err := g.node(agreed)
	if err != nil {
		return nil, err
	}
	role, err := call(m.Addr, "ROLE")
	if err != nil {
		return nil, fmt.Errorf("ROLE on %s: %w", m.Addr, err)
	}
	if r, ok := role.([]any); !ok || len(r) == 0 || r[0] != "master" {
		return nil, fmt.Errorf("%s answers ROLE %v", m.Addr, role)
	}
	return m, nil
}

// WaitReplicas waits until the current master (see Master) reports at
// least n replicas online (INFO replication), as after a failover once the
// Sentinels have pointed the remaining replicas at the new master and they
// have synced. It fails when ctx is done first.
func (g *SentinelGroup) WaitReplicas(ctx context.Context, n int) error {
	var last error
	for {
		m, err := g.Master()
		if err == nil {
			var got int
			if got, err = onlineReplicas(m.Addr); err == nil && got >= n {
				return nil
			} else if err == nil {
				err = fmt.Errorf("master %s has %d replicas online", m.Addr, got)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: not %d replicas online: %w (last: %v)", n, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the Sentinels first, so that they do not react to the rest,
// then every node (see Server.Stop; a killed master is not an error), and
// returns their errors joined. Nodes that Freeze stopped are thawed first.
// It is idempotent.
func (g *SentinelGroup) Stop() error {
	var errs []error
	for _, s := range g.Sentinels {
		errs = append(errs, s.Stop())
	}
	for _, s := range g.Nodes {
		_ = s.Thaw()
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}

// node returns the node listening on addr.
func (g *SentinelGroup) node(addr string) (*Server, error) {
	for _, s := range g.Nodes {
		if s.Addr == addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("redistest: %s is none of the group's nodes", addr)
}

// waitReplicas waits until master reports n replicas online and each
// replica reports its link up.
func (g *SentinelGroup) waitReplicas(master *Server, n int) error {
	deadline := time.Now().Add(groupTimeout)
	for {
		err := func() error {
			for _, s := range g.Nodes[1:] {
				info, err := do(s.Addr, "INFO", "replication")
				if err != nil {
					return fmt.Errorf("%s: INFO: %w", s.Addr, err)
				}
				if st := parseInfo(info)["master_link_status"]; st != "up" {
					return fmt.Errorf("%s: master_link_status is %q", s.Addr, st)
				}
			}
			got, err := onlineReplicas(master.Addr)
			if err == nil && got < n {
				err = fmt.Errorf("master %s has %d of %d replicas online", master.Addr, got, n)
			}
			return err
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: replicas not in sync within %v: %w", groupTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSentinels waits until every Sentinel monitors master with status ok,
// knows the replicas and all the other Sentinels.
func (g *SentinelGroup) waitSentinels(master string, replicas int) error {
	want := map[string]string{
		"name":      sentinelMasterName,
		"status":    "ok",
		"address":   master,
		"slaves":    strconv.Itoa(replicas),
		"sentinels": strconv.Itoa(len(g.Sentinels)),
	}
	deadline := time.Now().Add(groupTimeout)
	for {
		err := func() error {
			for _, s := range g.Sentinels {
				info, err := do(s.Addr, "INFO", "sentinel")
				if err != nil {
					return fmt.Errorf("%s: INFO sentinel: %w", s.Addr, err)
				}
				got := parseFields(parseInfo(info)["master0"])
				for k, v := range want {
					if got[k] != v {
						return fmt.Errorf("%s: %s is %q, want %q", s.Addr, k, got[k], v)
					}
				}
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: sentinels not ready within %v: %w", groupTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startSentinel starts redis-sentinel on a free port with a fresh config
// file in a directory of its own (Sentinel rewrites its config file, so
// both must be writable), monitoring the master on masterPort. It retries
// on a fresh port when the picked one was taken meanwhile, as Start does.
func startSentinel(bin string, masterPort, quorum int) (*Server, error) {
	dir, err := os.MkdirTemp("", "redistest-sentinel-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	conf := filepath.Join(dir, sentinelConfName)
	for attempt := 1; ; attempt++ {
		var port int
		if port, err = freePort(false); err != nil {
			break
		}
		if err = os.WriteFile(conf, sentinelConfig(port, dir, masterPort, quorum), 0o644); err != nil {
			err = fmt.Errorf("redistest: %w", err)
			break
		}
		s := &Server{
			Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port:   port,
			Dir:    dir,
			bin:    bin,
			args:   []string{conf},
			ownDir: true,
		}
		s.mu.Lock()
		err = s.launch()
		s.mu.Unlock()
		if err == nil {
			return s, nil
		}
		if attempt == bindAttempts || !errors.Is(err, errAddrInUse) {
			break
		}
		_ = os.Remove(filepath.Join(dir, logFileName))
	}
	_ = os.RemoveAll(dir)
	return nil, err
}

// sentinelConfig is the config file of a Sentinel on port, loopback only,
// that monitors 127.0.0.1:masterPort and fails it over quickly.
func sentinelConfig(port int, dir string, masterPort, quorum int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "port %d\n", port)
	fmt.Fprintf(&b, "bind 127.0.0.1\n")
	fmt.Fprintf(&b, "daemonize no\n")
	fmt.Fprintf(&b, "dir %s\n", dir)
	fmt.Fprintf(&b, "logfile %s\n", filepath.Join(dir, logFileName))
	fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d %d\n", sentinelMasterName, masterPort, quorum)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %s\n", sentinelMasterName, sentinelDownAfter)
	fmt.Fprintf(&b, "sentinel failover-timeout %s %s\n", sentinelMasterName, sentinelFailoverTimeout)
	fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", sentinelMasterName)
	return b.Bytes()
}

// masterAddr asks the Sentinel at addr for the master's address.
func masterAddr(addr string) (string, error) {
	reply, err := call(addr, "SENTINEL", "get-master-addr-by-name", sentinelMasterName)
	if err != nil {
		return "", err
	}
	hp, ok := reply.([]any)
	if !ok || len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name answered %v", reply)
	}
	host, _ := hp[0].(string)
	port, _ := hp[1].(string)
	return net.JoinHostPort(host, port), nil
}

// onlineReplicas returns how many replicas the server at addr reports
// online (INFO replication: slaveN:...,state=online,...).
func onlineReplicas(addr string) (int, error) {
	info, err := do(addr, "INFO", "replication")
	if err != nil {
		return 0, err
	}
	m := parseInfo(info)
	if m["role"] != "master" {
		return 0, fmt.Errorf("%s is a %s", addr, m["role"])
	}
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, "slave") && parseFields(v)["state"] == "online" {
			n++
		}
	}
	return n, nil
}

// parseFields splits an INFO value of the form "k=v,k=v" into a map.
func parseFields(v string) map[string]string {
	m := make(map[string]string)
	for f := range strings.SplitSeq(v, ",") {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// Freeze stops the server's process with SIGSTOP, as a stalled machine
// would: it neither reads nor answers until Thaw, while the kernel still
// buffers, up to its socket limits, what peers send it. A frozen replica
// falls behind its master. Freeze on a server that is not running does
// nothing.
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw resumes a server stopped by Freeze (SIGCONT). Thaw on a server that
// is running normally or not at all does nothing.
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return nil
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redistest: signal %v to %s: %w", sig, s.Addr, err)
	}
	return nil
}

// call sends one command on a fresh connection, as do does, and returns
// its reply of any type: a string, an int64, nil, or a []any of those
// (arrays nest). An error reply becomes an error.
func call(addr string, args ...string) (any, error) {
	const timeout = time.Second
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(req.Bytes()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("unexpected reply %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return string(body[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("unexpected reply %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
}
