package exporter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// progressEvery is how often a run records the bytes read from its source
// (Job.Read) when they moved: progress shows inside a chunk, however slow
// the source.
const progressEvery = time.Second

// progress counts the bytes a run reads from its source and records the
// count every progressEvery, in a write with no chunks, while it grows
// inside a chunk (the chunk writes record whole chunks themselves).
// The write also begins a pending job (bytes are flowing) and renews the
// lease. It is fenced like any write, so a late one changes nothing once
// the run has ended; a failed one is left to the next tick.
type progress struct {
	e      *Exporter
	rn     *run
	read   atomic.Int64 // bytes read so far, from the resume offset on
	chunks atomic.Int64 // of them, those in whole chunks handed to a write

	mu      sync.Mutex // held by a tick, so that stop waits for it
	sent    int64      // the count last recorded
	t       *time.Timer
	stopped bool
	exited  chan struct{} // a tick that found the progress stopped has returned
}

// startProgress starts recording the progress of rn, whose source is read
// from offset on.
func startProgress(e *Exporter, rn *run, offset int64) *progress {
	p := &progress{e: e, rn: rn, sent: offset, exited: make(chan struct{}, 1)}
	p.read.Store(offset)
	p.chunks.Store(offset)
	p.mu.Lock()                                 // a tick reads p.t under mu
	p.t = time.AfterFunc(progressEvery, p.tick) // owned: stop waits for it
	p.mu.Unlock()
	return p
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		p.exited <- struct{}{}
		return
	}
	if n := p.read.Load(); n > p.sent && n > p.chunks.Load() {
		ctx, cancel := context.WithTimeout(p.rn.ctx, progressEvery)
		err := p.e.store.Write(ctx, p.rn.job.ID, p.rn.lease, ChunkWrite{Begin: true, Read: n})
		cancel()
		if err == nil {
			p.sent = n
		} else {
			p.rn.log.DebugContext(ctx, "recording an export's progress failed", "err", err)
		}
	}
	p.t.Reset(progressEvery)
}

// stop ends the recording; once it returns, no tick runs or will.
func (p *progress) stop() {
	p.mu.Lock()
	p.stopped = true
	fired := !p.t.Stop()
	p.mu.Unlock()
	if fired {
		<-p.exited // the tick that fired waits for mu, sees stopped and returns
	}
}
