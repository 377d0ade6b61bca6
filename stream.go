package exporter

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// errRunDone is the cause a run's context is cancelled with when its
// worker is done with it.
var errRunDone = errors.New("run done")

// The chunking copy is two goroutines per running export: the worker
// reads and hashes chunks, the writer stores them. They meet at a queue of
// at most about a batch of chunks, so reading overlaps writing; the writer
// sends everything queued (up to a batch) in one script call, so small
// chunks cost one round trip per batch rather than per chunk.
const (
	batchBytes  = 2 << 20 // most bytes per store write
	batchChunks = 64      // most chunks per store write
	// beginDelay is how long the writer waits for the first chunks before
	// it moves the job to running on its own; a source that is quicker
	// than that has its begin fused into its first write.
	beginDelay = 10 * time.Millisecond
)

// batchLen is how many chunks of size fit a batch.
func batchLen(size int) int { return min(max(batchBytes/size, 1), batchChunks) }

// bufferPool recycles chunk buffers of one size, so that a blocked export
// holds only the chunk it is filling.
type bufferPool struct {
	size int
	pool sync.Pool
}

func (p *bufferPool) get(size int) []byte {
	if size == p.size {
		if b, ok := p.pool.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, size)
}

func (p *bufferPool) put(b []byte) {
	if cap(b) == p.size {
		b = b[:p.size]
		p.pool.Put(&b)
	}
}

// execute runs one export: the chunking copy and its ending. Its source is
// closed when the export ends, or as soon as the run's context is
// cancelled (CancelExport, Shutdown, a lost lease, a failed write), which
// unblocks a Read that waits on a closed source.
func (e *Exporter) execute(rn *run) {
	if rn.attempt != nil {
		// A durable export's attempt opens its source first (under the
		// run's context, which a cancel ends), so that it is closed with
		// the run however the run ends.
		r, err := e.openSource(rn)
		if err != nil {
			e.conclude(rn, 0, &sourceError{err})
			rn.cancel(errRunDone)
			return
		}
		rn.r = r
	}
	closed := make(chan struct{})
	context.AfterFunc(rn.ctx, func() { rn.closeReader(); close(closed) })
	defer func() {
		rn.cancel(errRunDone)
		<-closed // the closing goroutine is ours: wait for it
	}()
	if rn.ctx.Err() != nil { // stopped while it waited in the queue
		e.fail(rn, context.Cause(rn.ctx))
		return
	}
	bytes, err := e.copyChunks(rn)
	e.conclude(rn, bytes, err)
}

// conclude settles how the run of rn ended, given its copy's result: it
// completed (err is nil: the copy recorded it); it was ended elsewhere (a
// cancel, a lost lease: nothing to record); or it failed here, by the
// cause of its context if it was stopped, else by err (a reader's error,
// ErrTooLarge, a store error), which fail records.
func (e *Exporter) conclude(rn *run, bytes int64, err error) {
	if err == nil {
		rn.settle(StatusCompleted)
		e.settleQueue(rn)
		rn.log.InfoContext(rn.ctx, "export completed", "bytes", bytes)
		return
	}
	if rn.ctx.Err() != nil {
		err = context.Cause(rn.ctx)
	}
	if errors.Is(err, ErrLeaseLost) {
		err = e.lostCause(rn)
	}
	switch {
	case errors.Is(err, ErrCancelled):
		rn.settle(StatusCancelled)
		e.settleQueue(rn)
	case errors.Is(err, ErrLeaseLost):
		// A durable export's attempt whose lease lapsed: the queue resumes
		// the export elsewhere, or has already.
		rn.settleFailed(ErrWorkerLost)
	default:
		e.fail(rn, err)
		return
	}
	rn.log.InfoContext(rn.ctx, "export ended elsewhere", "cause", err)
}

// copyChunks reads the source of rn in chunks of exactly the job's
// ChunkSize (the last may be shorter) and hashes them. An export that fits
// in one chunk is stored, begun and completed by one store write from this
// goroutine; a larger one starts a chunkWriter, which stores the chunks
// while this goroutine reads the next ones.
func (e *Exporter) copyChunks(rn *run) (int64, error) {
	size := rn.job.ChunkSize
	sum := sha256.New()
	src := source{r: rn.r}
	var (
		total   int64
		index   int64 // of the next chunk
		failure error
		w       *chunkWriter
		begin   = &beginner{begun: true}
	)
	if a := rn.attempt; a != nil {
		// A durable export's attempt resumes after the chunks stored by
		// those before it, with their hash's state.
		index, total = a.chunks, a.bytes
		if a.hash != nil {
			if err := sum.(encoding.BinaryUnmarshaler).UnmarshalBinary(a.hash); err != nil {
				return 0, fmt.Errorf("%w: the stored hash state does not decode: %v", ErrCorrupt, err)
			}
		}
	} else {
		// A source slower than beginDelay to fill the first chunk sees its
		// job move to running on its own; a quicker one has the begin fused
		// into its first write.
		begin = beginLater(e, rn)
	}
	prog := startProgress(e, rn, total)
	defer prog.stop()
	src.count = &prog.read
	for {
		buf := e.bufs.get(size)
		n, err := src.fill(buf)
		switch {
		case rn.ctx.Err() != nil:
			failure = context.Cause(rn.ctx)
		case err != nil && err != io.EOF:
			failure = &sourceError{err}
		case total+int64(n) > e.cfg.MaxBytes:
			failure = fmt.Errorf("%w: more than MaxBytes (%d bytes)", ErrTooLarge, e.cfg.MaxBytes)
		}
		if failure != nil {
			e.bufs.put(buf)
			break
		}
		sum.Write(buf[:n])
		total += int64(n)
		prog.chunks.Store(total)
		c := chunk{data: buf[:n]}
		if rn.attempt != nil {
			c.hash, _ = sum.(encoding.BinaryMarshaler).MarshalBinary() // never fails
		}
		if err == io.EOF {
			c.checksum = "sha256:" + hex.EncodeToString(sum.Sum(nil))
		}
		if w == nil {
			begun, berr := begin.wait()
			if berr != nil {
				e.bufs.put(buf)
				failure = berr
				break
			}
			if c.last() { // the whole export in one write
				cw := ChunkWrite{Begin: !begun, Index: index, Bytes: total, Final: StatusCompleted, Checksum: c.checksum,
					Count: index, Replicas: e.cfg.MinReplicas, ReplicaTimeout: e.cfg.ReplicaTimeout}
				if n > 0 {
					cw.Chunks, cw.Count, cw.Hash = [][]byte{c.data}, index+1, c.hash
				}
				err := e.write(rn.ctx, rn, cw)
				e.bufs.put(buf)
				return total, err
			}
			w = &chunkWriter{e: e, rn: rn, begun: begun, index: index, bytes: total - int64(n),
				queue: make(chan chunk, 2*batchLen(size)), done: make(chan error, 1)}
			go w.loop()
		}
		select {
		case w.queue <- c:
		case <-rn.ctx.Done():
			e.bufs.put(buf)
			failure = context.Cause(rn.ctx)
		}
		if err == io.EOF || failure != nil {
			break
		}
	}
	if w == nil {
		begin.wait() // the begin write, if it started, is done before we return
		return 0, failure
	}
	close(w.queue) // after the last chunk, or early on a failure
	err := <-w.done
	if failure != nil {
		return 0, failure
	}
	return total, err
}

// beginner moves a job to running after beginDelay unless stopped first.
type beginner struct {
	t     *time.Timer
	done  chan error // the begin write's result, if the timer fired
	begun bool
	err   error
}

func beginLater(e *Exporter, rn *run) *beginner {
	b := &beginner{done: make(chan error, 1)}
	b.t = time.AfterFunc(beginDelay, func() { // owned: wait collects it
		b.done <- e.write(rn.ctx, rn, ChunkWrite{Begin: true})
	})
	return b
}

// wait stops the timer, or waits for the begin write it started, and
// reports whether the job has begun. It may be called more than once.
func (b *beginner) wait() (begun bool, err error) {
	if b.t != nil {
		if !b.t.Stop() {
			b.err = <-b.done
			b.begun = b.err == nil
		}
		b.t = nil
	}
	return b.begun, b.err
}

// chunk is one item of a chunkWriter's queue. The last chunk of an export
// carries its checksum (and may be empty). A durable export's chunks carry
// the hash's state after them.
type chunk struct {
	data     []byte
	checksum string
	hash     []byte
}

func (c chunk) last() bool { return c.checksum != "" }

// chunkWriter stores the chunks of one run in order, a batch per store
// write, and records completion with the last batch.
type chunkWriter struct {
	e     *Exporter
	rn    *run
	begun bool       // the job is running already
	index int64      // of the first chunk it stores
	bytes int64      // stored before it
	queue chan chunk // closed by the reader when it stops
	done  chan error
}

func (w *chunkWriter) loop() {
	err := w.write()
	if err != nil {
		// Stop the reader too: its source is closed, its Read returns.
		w.rn.cancel(err)
	}
	w.done <- err
}

// write takes every chunk queued (up to a batch) and stores them in one
// store write; the write that carries the last chunk completes the job.
// A queue closed without the last chunk means the reader failed: the
// reader records that ending.
func (w *chunkWriter) write() error {
	e, rn := w.e, w.rn
	var (
		index, bytes = w.index, w.bytes
		begun        = w.begun
		batch        [][]byte
	)
	release := func() {
		for _, c := range batch {
			e.bufs.put(c)
		}
		batch = batch[:0]
	}
	defer release()
	limit := batchLen(rn.job.ChunkSize)
	for {
		var c chunk
		select {
		case next, ok := <-w.queue:
			if !ok {
				return nil
			}
			c = next
		case <-rn.ctx.Done():
			return context.Cause(rn.ctx)
		}
		cw := ChunkWrite{Begin: !begun, Index: index, Bytes: bytes}
		for {
			if len(c.data) > 0 {
				batch = append(batch, c.data)
				cw.Bytes += int64(len(c.data))
				cw.Hash = c.hash
			} else {
				e.bufs.put(c.data)
			}
			if c.last() || len(batch) == limit {
				break
			}
			var ok bool
			select {
			case c, ok = <-w.queue:
				if !ok {
					// The reader failed. A durable export keeps the whole
					// chunks it read: the next attempt resumes after them.
					if rn.attempt != nil {
						cw.Chunks = batch
						return e.write(rn.ctx, rn, cw)
					}
					return nil
				}
				continue
			default:
			}
			break
		}
		cw.Chunks = batch
		if c.last() {
			cw.Final, cw.Checksum, cw.Count = StatusCompleted, c.checksum, index+int64(len(batch))
			cw.Replicas, cw.ReplicaTimeout = e.cfg.MinReplicas, e.cfg.ReplicaTimeout
		}
		if err := e.write(rn.ctx, rn, cw); err != nil {
			return err
		}
		begun, index, bytes = true, index+int64(len(batch)), cw.Bytes
		release()
		if c.last() {
			return nil
		}
	}
}

// maxEmptyReads is how many (0, nil) reads in a row fail an export with
// io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// source reads an export's source defensively: a panic becomes an error,
// an impossible count is an error, and endless empty reads end. It counts
// the bytes it reads into count, if not nil.
type source struct {
	r     io.Reader
	count *atomic.Int64
}

// fill reads until p is full or the source returns an error (io.EOF at
// the end).
func (s source) fill(p []byte) (n int, err error) {
	empty := 0
	for n < len(p) && err == nil {
		var m int
		m, err = s.read(p[n:])
		if m < 0 || m > len(p)-n {
			return n, fmt.Errorf("source Read returned %d for a %d-byte buffer", m, len(p)-n)
		}
		n += m
		if m > 0 && s.count != nil {
			s.count.Add(int64(m))
		}
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
			n, err = 0, fmt.Errorf("source Read panicked: %v", v)
		}
	}()
	return s.r.Read(p)
}
