package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// errRunDone is the cause a run's context is cancelled with when its
// worker is done with it.
var errRunDone = errors.New("exporter: run done")

// execute runs one export: pending -> running, the chunking copy, and the
// ending. Its source is closed when the export ends, or as soon as the
// run's context is cancelled (CancelExport, Shutdown, a lost lease), which
// unblocks a Read that waits on a closed source.
func (e *Exporter) execute(rn *run) {
	closed := make(chan struct{})
	context.AfterFunc(rn.ctx, func() { rn.closeReader(e.log); close(closed) })
	defer func() {
		rn.cancel(errRunDone)
		<-closed // the closing goroutine is ours: wait for it
	}()

	if rn.ctx.Err() != nil { // stopped while it waited in the queue
		e.end(rn, context.Cause(rn.ctx))
		return
	}
	if _, err := e.store.Begin(rn.ctx, rn.job.ID, rn.lease); err != nil {
		e.ended(rn, err)
		return
	}
	e.log.DebugContext(rn.ctx, "export running", "job", rn.job.ID, "owner", rn.job.Owner)
	job, err := e.copyChunks(rn)
	if err != nil {
		e.ended(rn, err)
		return
	}
	e.log.InfoContext(rn.ctx, "export completed", "job", job.ID, "owner", job.Owner, "bytes", job.Bytes)
}

// ended records why the run of rn stopped: the cause of its context if it
// was stopped, else err (a reader's error, ErrTooLarge, a store error).
func (e *Exporter) ended(rn *run, err error) {
	if rn.ctx.Err() != nil {
		err = context.Cause(rn.ctx)
	}
	if errors.Is(err, ErrLeaseLost) {
		e.log.InfoContext(rn.ctx, "export ended elsewhere (cancelled or lease lost)", "job", rn.job.ID)
		return
	}
	e.end(rn, err)
}

// copyChunks copies the source of rn into the store in chunks of exactly
// the job's ChunkSize (the last may be shorter), hashing as it goes, and
// records completion with the last chunk. The read of the next chunk
// overlaps the write of the previous one; two chunk buffers are all the
// memory it holds.
func (e *Exporter) copyChunks(rn *run) (*Job, error) {
	size := rn.job.ChunkSize
	bufs := [2][]byte{make([]byte, size), make([]byte, size)}
	sum := sha256.New()
	src := source{r: rn.r}
	var (
		stored   int64 // bytes in chunks written or being written
		index    int64 // index of the chunk in cur
		inflight chan error
	)
	// wait collects the previous chunk's write; it is always called before
	// returning, so the writing goroutine never outlives the copy.
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	cur := bufs[0]
	n, rerr := src.fill(cur)
	for {
		switch {
		case rn.ctx.Err() != nil:
			wait()
			return nil, context.Cause(rn.ctx)
		case rerr != nil && rerr != io.EOF:
			wait()
			return nil, rerr
		case stored+int64(n) > e.cfg.MaxBytes:
			wait()
			return nil, fmt.Errorf("%w: more than MaxBytes (%d bytes)", ErrTooLarge, e.cfg.MaxBytes)
		}
		sum.Write(cur[:n])
		stored += int64(n)
		if err := wait(); err != nil {
			return nil, err
		}
		if rerr == io.EOF {
			// The last chunk, fused with completion. An export whose size is
			// a multiple of the chunk size ends with an empty one.
			w := ChunkWrite{Index: -1, Bytes: stored, Final: StatusCompleted,
				Checksum: "sha256:" + hex.EncodeToString(sum.Sum(nil)), Chunks: index}
			if n > 0 {
				w.Index, w.Data, w.Chunks = index, cur[:n], index+1
			}
			return e.store.Write(rn.ctx, rn.job.ID, rn.lease, w)
		}
		inflight = make(chan error, 1)
		go func(w ChunkWrite) {
			_, err := e.store.Write(rn.ctx, rn.job.ID, rn.lease, w)
			inflight <- err
		}(ChunkWrite{Index: index, Data: cur[:n], Bytes: stored})
		index++
		if &cur[0] == &bufs[0][0] {
			cur = bufs[1]
		} else {
			cur = bufs[0]
		}
		n, rerr = src.fill(cur)
	}
}

// maxEmptyReads is how many (0, nil) reads in a row fail an export with
// io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// source reads an export's source defensively: a panic becomes an error,
// an impossible count is an error, and endless empty reads end.
type source struct{ r io.Reader }

// fill reads until p is full or the source returns an error (io.EOF at
// the end).
func (s source) fill(p []byte) (n int, err error) {
	empty := 0
	for n < len(p) && err == nil {
		var m int
		m, err = s.read(p[n:])
		if m < 0 || m > len(p)-n {
			return n, fmt.Errorf("exporter: source Read returned %d for a %d-byte buffer", m, len(p)-n)
		}
		n += m
		if m > 0 || err != nil {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			err = io.ErrNoProgress
		}
	}
	return n, err
}

func (s source) read(p []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			n, err = 0, fmt.Errorf("exporter: source Read panicked: %v", v)
		}
	}()
	return s.r.Read(p)
}
