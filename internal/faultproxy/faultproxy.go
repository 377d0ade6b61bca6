// Package faultproxy is a TCP proxy for tests that puts real network faults
// between a client and a server on the loopback interface. It listens on a
// free port of 127.0.0.1 and forwards every connection to a target address;
// the test can then
//
//   - cut every connection, and refuse new ones, until it restores them
//     (Cut, CutFor, Restore): the client sees its connections end, as when a
//     server restarts or a network path breaks;
//   - keep forwarding the client's bytes to the server but discard the
//     server's replies (DropReplies): the server applies commands whose
//     replies are lost, which is what makes a client retry a write that was
//     already applied;
//   - hold what one connection sends from a given Redis command on (HoldNext),
//     and deliver part of it later (Release): a write that the client gave
//     up on reaches the server late and in part, after its retry.
//
// A refused connection is accepted and closed at once: the client's dial
// succeeds and its first read ends, which clients treat as a dropped
// connection. Byte and connection counters (Stats) let a test check that a
// fault hit something.
//
//	srv := redistest.StartT(t, redistest.Options{})
//	p := faultproxy.StartT(t, srv.Addr)
//	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
//	...
//	p.CutFor(2 * time.Second)
//
// The Proxy owns every goroutine it starts and Close waits for all of them.
// Its methods are safe for concurrent use.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialTimeout bounds the proxy's own connection to the target.
const dialTimeout = 5 * time.Second

// Proxy forwards TCP connections from Addr to a target. Create one with
// Start or StartT and stop it with Close.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close: ends dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu       sync.Mutex
	links    map[*link]struct{} // open connection pairs
	cut      bool               // Cut until Restore
	cutUntil time.Time          // CutFor until then (or Restore)
	closed   bool

	drop atomic.Bool

	hold   string // HoldNext's command name, until a link takes it
	holder *link  // the link that took it, until Release
	took   chan struct{}

	accepted, refused, severed atomic.Int64
	up, down, dropped          atomic.Int64
}

// link is one proxied connection: the client's and the proxy's to the
// target.
type link struct {
	client, server net.Conn
	once           sync.Once

	// Set once the link holds what its client sends (HoldNext), under the
	// proxy's mu: the held bytes, whole commands only, and each command's
	// name and end offset in held.
	holding  bool
	held     []byte
	cmds     []heldCommand
	released chan struct{} // closed by Release
}

type heldCommand struct {
	name string
	end  int
}

// close ends both sides; the copy goroutines then return.
func (l *link) close() {
	l.once.Do(func() {
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// Start listens on a free port of 127.0.0.1 and forwards connections to
// target. The caller must call Close.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// StartT is Start for tests: it fails t if the proxy cannot listen and
// registers Close with t.Cleanup.
func StartT(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Addr returns the address clients connect to, "127.0.0.1:<port>".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut closes every current connection, on both sides, and refuses new ones
// until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	p.sever()
}

// CutFor is Cut followed by a Restore after d, without a goroutine: new
// connections are refused until d has passed or Restore is called.
func (p *Proxy) CutFor(d time.Duration) {
	p.mu.Lock()
	p.cutUntil = time.Now().Add(d)
	p.mu.Unlock()
	p.sever()
}

// Restore lets connections through again after Cut or CutFor.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut, p.cutUntil = false, time.Time{}
	p.mu.Unlock()
}

// DropReplies makes the proxy discard (on) or forward again (off) the bytes
// the target sends, on every connection, current or new. The client's
// bytes are forwarded either way. Replies dropped are lost for good: a
// client reading a request-reply protocol is out of step on that
// connection, so a test usually follows DropReplies(false) with Cut.
func (p *Proxy) DropReplies(on bool) { p.drop.Store(on) }

// HoldNext makes the next connection whose client sends a command named
// name (in any case) hold from that command on: the proxy forwards nothing
// more that the client sends on it, and keeps its side towards the server
// open after the client closes it, until Release. Replies to what was sent
// before still flow. Commands are told apart by parsing what clients send
// as RESP arrays, so this works for Redis clients only. It replaces a hold
// that no connection has taken yet.
func (p *Proxy) HoldNext(name string) {
	p.mu.Lock()
	p.hold, p.holder, p.took = name, nil, make(chan struct{})
	p.mu.Unlock()
}

// Held waits up to timeout for a connection to take the hold of HoldNext
// and to have sent the held command whole, and returns the names of the
// whole commands it holds so far, in order.
func (p *Proxy) Held(timeout time.Duration) ([]string, error) {
	p.mu.Lock()
	took := p.took
	p.mu.Unlock()
	if took == nil {
		return nil, errors.New("faultproxy: Held without HoldNext")
	}
	select {
	case <-took:
	default:
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-took:
		case <-t.C:
			return nil, fmt.Errorf("faultproxy: no connection sent the held command within %v", timeout)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make([]string, len(p.holder.cmds))
	for i, c := range p.holder.cmds {
		names[i] = c.name
	}
	return names, nil
}

// Release delivers to the server the held connection's commands up to and
// including the first one named through (all of them if through is ""),
// then closes that connection: the server runs what it received, as it
// would a late part of a pipeline that its client gave up on. It returns
// the address the server knows that connection by (as in CLIENT LIST).
func (p *Proxy) Release(through string) (string, error) {
	p.mu.Lock()
	l := p.holder
	p.holder, p.hold = nil, ""
	if l == nil {
		p.mu.Unlock()
		return "", errors.New("faultproxy: Release without a held connection")
	}
	n := len(l.held)
	if through != "" {
		n = -1
		for _, c := range l.cmds {
			if strings.EqualFold(c.name, through) {
				n = c.end
				break
			}
		}
	}
	out := slices.Clone(l.held)
	l.holding = false
	p.mu.Unlock()
	defer func() {
		close(l.released)
		l.close()
	}()
	if n < 0 {
		return "", fmt.Errorf("faultproxy: the held connection sent no %s", through)
	}
	if _, err := l.server.Write(out[:n]); err != nil {
		return "", fmt.Errorf("faultproxy: release: %w", err)
	}
	p.up.Add(int64(n))
	return l.server.LocalAddr().String(), nil
}

// Stats are the proxy's counters since Start.
type Stats struct {
	Accepted     int64 // connections forwarded to the target
	Refused      int64 // connections closed on arrival because the proxy was cut
	Severed      int64 // forwarded connections closed by Cut, CutFor or Close
	Open         int   // forwarded connections open now
	BytesUp      int64 // client to target
	BytesDown    int64 // target to client, delivered
	BytesDropped int64 // target to client, discarded by DropReplies
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.links)
	p.mu.Unlock()
	return Stats{
		Accepted: p.accepted.Load(), Refused: p.refused.Load(), Severed: p.severed.Load(), Open: open,
		BytesUp: p.up.Load(), BytesDown: p.down.Load(), BytesDropped: p.dropped.Load(),
	}
}

// Close stops listening, closes every connection and waits for all the
// proxy's goroutines. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.cancel()
		_ = p.ln.Close()
		p.sever()
	}
	p.wg.Wait()
}

// refusing reports whether new connections are refused. p.mu is held.
func (p *Proxy) refusing() bool {
	return p.closed || p.cut || time.Now().Before(p.cutUntil)
}

// sever closes every open link.
func (p *Proxy) sever() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		p.severed.Add(1)
		l.close()
	}
}

// accept runs until the listener is closed.
func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (too many files, say): back off a
			// little rather than spin, unless Close comes first.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		refuse := p.refusing()
		if !refuse {
			p.wg.Add(1) // under p.mu, so Close cannot pass wg.Wait meanwhile
		}
		p.mu.Unlock()
		if refuse {
			p.refused.Add(1)
			_ = c.Close()
			continue
		}
		go p.serve(c)
	}
}

// serve connects c to the target and copies both ways until either side
// ends or the link is severed.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	s, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	l := &link{client: c, server: s}
	p.mu.Lock()
	if p.refusing() { // cut while we dialled
		p.mu.Unlock()
		p.refused.Add(1)
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	p.accepted.Add(1)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: serve waits for it below
		defer wg.Done()
		p.copyUp(l)
		// A held link keeps its server side open for Release, after its
		// client gave up on it.
		p.mu.Lock()
		released := l.released
		p.mu.Unlock()
		if released != nil {
			select {
			case <-released:
			case <-p.ctx.Done():
			}
		}
		l.close()
	}()
	p.copy(c, s, &p.drop, &p.down)
	l.close()
	wg.Wait()

	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// copyUp moves what the client of l sends to the server until either
// fails, command by command: a command that takes the hold of HoldNext,
// and everything after it, is kept in l instead.
func (p *Proxy) copyUp(l *link) {
	buf := make([]byte, 32<<10)
	var cmds commandSplitter
	for {
		m, err := l.client.Read(buf)
		if m > 0 {
			ok := true
			cmds.split(buf[:m], func(seg []byte, name string, first, last bool) {
				if ok {
					ok = p.route(l, seg, name, first, last)
				}
			})
			if !ok {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// route forwards seg, a part of one command (its first part, named, or
// its last), or holds it. It reports whether the link is still usable.
func (p *Proxy) route(l *link, seg []byte, name string, first, last bool) bool {
	p.mu.Lock()
	if first && !l.holding && p.hold != "" && p.holder == nil && strings.EqualFold(name, p.hold) {
		l.holding, l.released = true, make(chan struct{})
		p.holder = l
	}
	if l.holding {
		l.held = append(l.held, seg...)
		if last {
			l.cmds = append(l.cmds, heldCommand{name: name, end: len(l.held)})
			if len(l.cmds) == 1 && p.holder == l {
				close(p.took) // Held: the held command is in whole
			}
		}
		p.mu.Unlock()
		return true
	}
	p.mu.Unlock()
	if _, err := l.server.Write(seg); err != nil {
		return false
	}
	p.up.Add(int64(len(seg)))
	return true
}

// copy moves bytes from src to dst until either fails, counting them in n,
// or, while drop is set, discarding them and counting them as dropped.
func (p *Proxy) copy(dst io.Writer, src io.Reader, drop *atomic.Bool, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if drop != nil && drop.Load() {
				p.dropped.Add(int64(m))
			} else {
				if _, werr := dst.Write(buf[:m]); werr != nil {
					return
				}
				n.Add(int64(m))
			}
		}
		if err != nil {
			return
		}
	}
}
