package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

var errSourceClosed = errors.New("bench: source closed")

// blockSource is an export source that blocks in Read until it is closed,
// and records when Close was called: the end of a W4 sample.
type blockSource struct {
	started   chan struct{} // closed by the first Read
	closed    chan struct{} // closed by the first Close
	startOnce sync.Once
	closeOnce sync.Once
	closedAt  time.Time // written before closed is closed
}

func newBlockSource() *blockSource {
	return &blockSource{started: make(chan struct{}), closed: make(chan struct{})}
}

func (s *blockSource) Read(p []byte) (int, error) {
	s.startOnce.Do(func() { close(s.started) })
	<-s.closed
	return 0, errSourceClosed
}

func (s *blockSource) Close() error {
	s.closeOnce.Do(func() {
		s.closedAt = time.Now()
		close(s.closed)
	})
	return nil
}

// waitStarted waits for the first Read: the export is running.
func (s *blockSource) waitStarted(ctx context.Context) error {
	return waitChan(ctx, s.started, 10*time.Second, "the export's first Read")
}

// waitClosed waits for Close.
func (s *blockSource) waitClosed(ctx context.Context) error {
	return waitChan(ctx, s.closed, 10*time.Second, "the source's Close")
}

// stallSource delivers its bytes, then blocks in Read until it is closed
// (M1). The bytes are shared between sources: they are the caller's, not
// the exporter's, memory.
type stallSource struct {
	data   []byte
	off    int
	closed chan struct{}
	once   sync.Once
}

func newStallSource(data []byte) *stallSource {
	return &stallSource{data: data, closed: make(chan struct{})}
}

func (s *stallSource) Read(p []byte) (int, error) {
	if s.off < len(s.data) {
		n := copy(p, s.data[s.off:])
		s.off += n
		return n, nil
	}
	<-s.closed
	return 0, errSourceClosed
}

func (s *stallSource) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// tinySource is the smallest source a service might queue (M3): a word
// of state (say, a row id to resume from), no buffer. It is empty if it
// is ever read.
type tinySource struct{ from int }

func (s *tinySource) Read(p []byte) (int, error) { return 0, io.EOF }

func (s *tinySource) Close() error { return nil }

// waitChan waits until ch is closed, at most d.
func waitChan(ctx context.Context, ch <-chan struct{}, d time.Duration, what string) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
	case <-t.C:
		return fmt.Errorf("waiting for %s: nothing after %v", what, d)
	}
}
