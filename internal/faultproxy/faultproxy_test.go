package faultproxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/faultproxy"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer echoes every byte it receives, counts them, and waits for its
// goroutines when the test ends.
type echoServer struct {
	ln       net.Listener
	received atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					s.received.Add(int64(n))
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) Addr() string { return s.ln.Addr().String() }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within a second.
func roundTrip(c net.Conn, msg []byte) error {
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %q, want %q", got, msg)
	}
	return nil
}

// requireEnded fails unless c's next read ends (EOF or reset) within a
// second, rather than timing out.
func requireEnded(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection still open: %v", err)
}

func TestForward(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	require.Equal(t, echo.Addr(), p.Target())
	c := dial(t, p.Addr())
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB, several buffers
	for _, msg := range [][]byte{[]byte("hello"), big} {
		require.NoError(t, roundTrip(c, msg))
	}
	n := int64(5 + len(big))
	// BytesUp counts a write to the target once it returned, which may be
	// after the echo came back.
	require.Eventually(t, func() bool { st := p.Stats(); return st.BytesUp == n && st.BytesDown == n },
		5*time.Second, time.Millisecond, "%+v", p.Stats())
	st := p.Stats()
	require.Equal(t, int64(1), st.Accepted)
	require.Equal(t, 1, st.Open)
	require.Zero(t, st.BytesDropped)
	require.Equal(t, n, echo.received.Load())

	// The client's close closes the proxy's connection to the target.
	c.Close()
	require.Eventually(t, func() bool { return p.Stats().Open == 0 }, 5*time.Second, time.Millisecond)
}

func TestCutAndRestore(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	conns := []net.Conn{dial(t, p.Addr()), dial(t, p.Addr())}
	for _, c := range conns {
		require.NoError(t, roundTrip(c, []byte("ping")))
	}

	p.Cut()
	for _, c := range conns {
		requireEnded(t, c)
	}
	require.Equal(t, int64(2), p.Stats().Severed)
	// New connections are accepted by the kernel, then closed at once.
	for range 3 {
		requireEnded(t, dial(t, p.Addr()))
	}
	require.Equal(t, int64(3), p.Stats().Refused)
	require.Equal(t, int64(2), p.Stats().Accepted)

	p.Restore()
	c := dial(t, p.Addr())
	require.NoError(t, roundTrip(c, []byte("again")))
	require.Equal(t, int64(3), p.Stats().Accepted)
}

func TestCutFor(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	old := dial(t, p.Addr())
	require.NoError(t, roundTrip(old, []byte("ping")))

	start := time.Now()
	p.CutFor(300 * time.Millisecond)
	requireEnded(t, old)
	requireEnded(t, dial(t, p.Addr()))
	// Bounded: the cut lifts on its own.
	require.Eventually(t, func() bool {
		return roundTrip(dial(t, p.Addr()), []byte("ping")) == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	// Restore ends a CutFor early.
	p.CutFor(time.Hour)
	requireEnded(t, dial(t, p.Addr()))
	p.Restore()
	require.NoError(t, roundTrip(dial(t, p.Addr()), []byte("ping")))
}

func TestDropReplies(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	c := dial(t, p.Addr())
	require.NoError(t, roundTrip(c, []byte("before")))

	p.DropReplies(true)
	_, err := c.Write([]byte("lost reply"))
	require.NoError(t, err)
	// The server gets the request...
	require.Eventually(t, func() bool { return echo.received.Load() == int64(len("before")+len("lost reply")) },
		5*time.Second, time.Millisecond)
	// ...but its reply never arrives, and the connection stays open.
	require.Eventually(t, func() bool { return p.Stats().BytesDropped == int64(len("lost reply")) },
		5*time.Second, time.Millisecond)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "want a read timeout, got %v", err)
	// A new connection is dropped too.
	c2 := dial(t, p.Addr())
	_, err = c2.Write([]byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().BytesDropped == int64(len("lost reply")+1) },
		5*time.Second, time.Millisecond)

	// Once off, replies flow again; what was dropped stays lost.
	p.DropReplies(false)
	require.NoError(t, roundTrip(c, []byte("after")))
	up := int64(len("before") + len("lost reply") + 1 + len("after"))
	down := int64(len("before") + len("after"))
	require.Eventually(t, func() bool { st := p.Stats(); return st.BytesUp == up && st.BytesDown == down },
		5*time.Second, time.Millisecond, "%+v", p.Stats())
}

func TestClose(t *testing.T) {
	echo := startEcho(t)
	p, err := faultproxy.Start(echo.Addr())
	require.NoError(t, err)
	c := dial(t, p.Addr())
	require.NoError(t, roundTrip(c, []byte("ping")))
	addr := p.Addr()

	p.Close()
	requireEnded(t, c)
	require.Zero(t, p.Stats().Open)
	p.Close() // idempotent
	// The port no longer accepts connections.
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		requireEnded(t, c2)
		c2.Close()
	}
}

// TestTargetDown: a proxy whose target does not listen closes each client
// connection, as the target's refusal would.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	p := faultproxy.StartT(t, addr)
	requireEnded(t, dial(t, p.Addr()))
	require.Zero(t, p.Stats().Accepted)
}

// TestConcurrentCuts runs clients against the proxy while it is cut and
// restored, for the race detector and goleak: every goroutine ends.
func TestConcurrentCuts(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte(fmt.Sprintf("client %d", i))
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
				if err != nil {
					continue
				}
				for range 20 {
					if roundTrip(c, msg) != nil {
						break
					}
					ok.Add(1)
				}
				c.Close()
			}
		}()
	}
	for i := range 20 {
		time.Sleep(5 * time.Millisecond)
		switch i % 4 {
		case 0:
			p.Cut()
		case 1:
			p.Restore()
		case 2:
			p.DropReplies(true)
			p.CutFor(2 * time.Millisecond)
		case 3:
			p.DropReplies(false)
		}
	}
	p.Restore()
	p.DropReplies(false)
	require.Eventually(t, func() bool { return ok.Load() > 100 }, 10*time.Second, time.Millisecond)
	close(stop)
	wg.Wait()
	p.Close()
	require.Zero(t, p.Stats().Open)
	t.Logf("stats: %+v", p.Stats())
}

// TestHoldAndRelease holds a connection from its RPUSHX on, lets its
// client give up on it, and delivers the held commands through RPUSHX:
// the server gets exactly the commands before the hold and those up to
// the end of RPUSHX, and the connection then closes. Another connection
// is not held.
func TestHoldAndRelease(t *testing.T) {
	echo := startEcho(t)
	p := faultproxy.StartT(t, echo.Addr())
	c := dial(t, p.Addr())
	ping := resp("PING")
	require.NoError(t, roundTrip(c, ping))

	p.HoldNext("rpushx")
	held := bytes.Join([][]byte{resp("MULTI"), resp("RPUSHX", "k", "a", "b"), resp("EVALSHA", "f", "1", "k"), resp("EXEC")}, nil)
	_, err := c.Write(held[:len(resp("MULTI"))])
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	got := make([]byte, len(resp("MULTI")))
	_, err = io.ReadFull(c, got) // MULTI came before the hold
	require.NoError(t, err)
	_, err = c.Write(held[len(resp("MULTI")):])
	require.NoError(t, err)
	names, err := p.Held(5 * time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool { names, _ = p.Held(0); return len(names) == 3 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"RPUSHX", "EVALSHA", "EXEC"}, names)

	other := dial(t, p.Addr())
	require.NoError(t, roundTrip(other, resp("RPUSHX", "k", "c")), "a second connection was held")

	before := echo.received.Load()
	c.Close() // the client gives up; the server side stays for Release
	addr, err := p.Release("RPUSHX")
	require.NoError(t, err)
	require.NotEmpty(t, addr)
	want := int64(len(resp("RPUSHX", "k", "a", "b")))
	require.Eventually(t, func() bool { return echo.received.Load() == before+want }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return p.Stats().Open == 1 }, 5*time.Second, time.Millisecond)
	_, err = p.Release("")
	require.Error(t, err, "a second Release without a hold")
}

func resp(args ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(b.String())
}
