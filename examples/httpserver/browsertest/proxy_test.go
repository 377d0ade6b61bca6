package browsertest

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// proxy is a reverse proxy on a free port of 127.0.0.1, in front of the
// example server's instances as a load balancer would be: the page is
// served through it, and the test switches its target, or holds it (it
// then forwards nothing, in either direction, and closes nothing: a
// network that went silent). It keeps the Host of the request, so that
// the instance compares the page's Origin with the proxy's address, as
// it must behind a real one.
type proxy struct {
	URL string // "http://127.0.0.1:PORT"

	ts        *httptest.Server
	transport *http.Transport
	target    atomic.Pointer[url.URL]

	mu   sync.Mutex
	held chan struct{} // not nil while held; closed by release
	seen []string      // "METHOD path" of each request forwarded
}

// startProxy starts a proxy to target (a base URL) until the test ends.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{transport: &http.Transport{}}
	p.switchTo(t, target)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target.Load())
			pr.Out.Host = pr.In.Host
		},
		Transport:     p.transport,
		FlushInterval: -1, // event streams at once
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	p.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.wait(r.Context()) {
			return
		}
		p.mu.Lock()
		p.seen = append(p.seen, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		rp.ServeHTTP(&heldWriter{ResponseWriter: w, p: p, ctx: r.Context()}, r)
	}))
	p.URL = p.ts.URL
	t.Cleanup(func() {
		p.release()
		// Close waits for the requests in flight, and the browser's event
		// streams run until their export ends: cut them first.
		p.ts.CloseClientConnections()
		p.ts.Close()
		p.transport.CloseIdleConnections()
	})
	return p
}

// switchTo makes the proxy forward the requests that come from now on to
// target.
func (p *proxy) switchTo(t *testing.T, target string) {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	p.target.Store(u)
}

// hold makes the proxy forward nothing until release: requests wait, and
// the responses under way (event streams) stop, their connections open.
func (p *proxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// release ends a hold.
func (p *proxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// wait returns true once the proxy is not held, or false when ctx ends
// first.
func (p *proxy) wait(ctx context.Context) bool {
	p.mu.Lock()
	held := p.held
	p.mu.Unlock()
	if held == nil {
		return true
	}
	select {
	case <-held:
		return true
	case <-ctx.Done():
		return false
	}
}

// requests returns the requests forwarded so far, "METHOD path", and
// their count is the mark of a later call's start.
func (p *proxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// heldWriter is the ResponseWriter of a forwarded request: its writes
// wait while the proxy is held.
type heldWriter struct {
	http.ResponseWriter
	p   *proxy
	ctx context.Context // the request's
}

func (w *heldWriter) Write(b []byte) (int, error) {
	if !w.p.wait(w.ctx) {
		return 0, w.ctx.Err()
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (ReverseProxy's flushes) reach the
// connection.
func (w *heldWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
