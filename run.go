package exporter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// run is one export held by this Exporter, pending or running.
type run struct {
	job   *Job         // as created; ChunkSize and ID are what the copy needs
	log   *slog.Logger // the Exporter's, with the job's id and owner
	start time.Time    // when StartExport was called
	lease Lease
	// renewed is when the lease was last renewed (by the lease keeper,
	// which alone uses it), or created.
	renewed time.Time
	r       io.Reader
	ctx     context.Context // cancelled with the reason the run must stop
	cancel  context.CancelCauseFunc
	// attempt is set for an attempt of a durable export (Enqueue), whose
	// source the run opens; nil for StartExport's.
	attempt *attempt

	// final is how the run ended, once known: the first settle wins. Nil
	// means it failed or was cancelled, by its context's cause.
	final     atomic.Pointer[Status]
	closeOnce sync.Once
	// code is the failure's code (Job.ErrorCode) when rn failed by a cause
	// that settleFailed recorded.
	code atomic.Pointer[string]
}

// settle records how rn ended, for the count of its end. The first status
// settled wins; settle reports whether it was this one.
func (rn *run) settle(s Status) (first bool) {
	return rn.final.CompareAndSwap(nil, &s)
}

// settleFailed settles rn as failed by cause, and keeps cause's code for
// the count of failures by code.
func (rn *run) settleFailed(cause error) (first bool) {
	first = rn.settle(StatusFailed)
	if first {
		code := codeOf(cause)
		rn.code.Store(&code)
	}
	return first
}

// failCode is the code of rn's failure: the one settleFailed kept, else
// that of its context's cause.
func (rn *run) failCode() string {
	if c := rn.code.Load(); c != nil {
		return *c
	}
	if cause := context.Cause(rn.ctx); cause != nil {
		return codeOf(cause)
	}
	return ""
}

// outcome is how rn ended: the status settled, else cancelled or failed by
// its context's cause.
func (rn *run) outcome() Status {
	if s := rn.final.Load(); s != nil {
		return *s
	}
	if errors.Is(context.Cause(rn.ctx), ErrCancelled) {
		return StatusCancelled
	}
	return StatusFailed
}

// closeReader closes the source, if it is an io.Closer, exactly once. A
// panicking Close is contained.
func (rn *run) closeReader() {
	rn.closeOnce.Do(func() {
		closeSource(rn.r, rn.log)
	})
}

func closeSource(r io.Reader, log *slog.Logger) {
	c, ok := r.(io.Closer)
	if !ok {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			log.Error("export source Close panicked", "panic", p)
		}
	}()
	if err := c.Close(); err != nil {
		log.Debug("export source Close failed", "err", err)
	}
}
