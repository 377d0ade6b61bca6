package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
)

// Download reads a completed export's bytes from the store, a few chunks
// at a time, so its memory stays bounded whatever the export's size. It is
// an io.ReadSeekCloser, io.ReaderAt and io.WriterTo, so http.ServeContent
// can serve it, Range requests included.
//
// Reading sequentially from offset 0 to the end (with Read or WriteTo, and
// Seeks that only return to offset 0) verifies the bytes against
// Job.Checksum: a mismatch, or a missing chunk, is an error wrapping
// ErrCorrupt, returned instead of the last chunk's bytes, so a verified
// read never delivers the whole of a corrupt export. ReadAt and reads after a Seek
// elsewhere are not verified. If the export expires while it is read,
// reads fail with an error wrapping ErrNotFound.
//
// ReadAt may be called concurrently; the other methods are for one
// goroutine at a time, as with os.File. Reads use the context given to
// OpenExport.
type Download struct {
	ctx   context.Context // OpenExport's: an io.Reader has no other way to get one
	store Store
	job   *Job
	chunk int64 // the job's chunk size
	batch int   // chunks fetched per round trip

	closed atomic.Bool
	off    int64
	cache  [][]byte // chunks cacheAt, cacheAt+1, ...
	cached int64

	verify bool // reading sequentially from offset 0
	sum    hash.Hash
	summed int64 // bytes hashed; equals off while verify holds
	err    error // a sticky verification failure
}

// downloadBatchBytes is about how many bytes one store read fetches.
const downloadBatchBytes = 1 << 20

func newDownload(ctx context.Context, store Store, job *Job) *Download {
	return &Download{
		ctx: ctx, store: store, job: job,
		chunk:  int64(job.ChunkSize),
		batch:  min(max(downloadBatchBytes/job.ChunkSize, 1), 16),
		verify: true,
		sum:    sha256.New(),
	}
}

// Size returns the export's size in bytes.
func (d *Download) Size() int64 { return d.job.Bytes }

// Job returns the job as it was when the Download was opened.
func (d *Download) Job() *Job { return d.job.clone() }

// Close releases the Download. Reads after Close fail; Close is idempotent.
func (d *Download) Close() error {
	d.closed.Store(true)
	d.cache = nil
	return nil
}

func (d *Download) errorf(err error) error {
	return fmt.Errorf("exporter: download %s: %w", d.job.ID, err)
}

var errDownloadClosed = fmt.Errorf("read after Close: %w", fs.ErrClosed)

// Read implements io.Reader.
func (d *Download) Read(p []byte) (int, error) {
	if err := d.usable(); err != nil {
		return 0, err
	}
	if d.off >= d.Size() {
		if err := d.verified(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	span, err := d.span()
	if err != nil {
		return 0, err
	}
	n := copy(p, span)
	d.advance(p[:n])
	return n, nil
}

// WriteTo implements io.WriterTo, so io.Copy moves whole chunks without
// an intermediate buffer. It fetches the next batch of chunks while it
// writes (and, from offset 0, verifies) the current one. From offset 0 it
// verifies the bytes as Read does.
func (d *Download) WriteTo(w io.Writer) (int64, error) {
	if err := d.usable(); err != nil {
		return 0, err
	}
	if d.off >= d.Size() {
		return 0, d.verified()
	}
	batches := make(chan fetched, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned by this call, which waits for it below
		defer wg.Done()
		defer close(batches)
		for i := d.off / d.chunk; i*d.chunk < d.Size(); i += int64(d.batch) {
			chunks, err := d.fetch(i, d.batch)
			select {
			case batches <- fetched{first: i, chunks: chunks, err: err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	var total int64
	for f := range batches {
		if f.err != nil {
			return total, f.err
		}
		d.cache, d.cached = f.chunks, f.first
		end := min((f.first+int64(len(f.chunks)))*d.chunk, d.Size())
		for d.off < end {
			if err := d.usable(); err != nil {
				return total, err
			}
			span, err := d.span()
			if err != nil {
				return total, err
			}
			n, werr := w.Write(span)
			if n < 0 || n > len(span) {
				return total, d.errorf(fmt.Errorf("%w: the writer returned %d for a write of %d bytes", ErrInvalid, n, len(span)))
			}
			total += int64(n)
			d.advance(span[:n])
			switch {
			case werr != nil:
				return total, werr
			case n < len(span):
				return total, io.ErrShortWrite
			}
		}
	}
	return total, d.verified()
}

// fetched is one batch of chunks read ahead by WriteTo.
type fetched struct {
	first  int64
	chunks [][]byte
	err    error
}

// usable reports why the Download cannot be read, if it cannot.
func (d *Download) usable() error {
	if d.closed.Load() {
		return d.errorf(errDownloadClosed)
	}
	return d.err
}

// span returns the bytes from the current offset to the end of its chunk.
//
// On a verified read, the last span is hashed and checked before any of it
// is delivered, so corrupt data never reaches the end: http.ServeContent,
// which drops read errors once it has sent the headers, then sends a body
// shorter than its Content-Length and the client sees the failure.
func (d *Download) span() ([]byte, error) {
	idx := d.off / d.chunk
	if idx < d.cached || idx >= d.cached+int64(len(d.cache)) {
		chunks, err := d.fetch(idx, d.batch)
		if err != nil {
			return nil, err
		}
		d.cache, d.cached = chunks, idx
	}
	s := d.cache[idx-d.cached][d.off-idx*d.chunk:]
	if d.verify && d.off+int64(len(s)) == d.Size() {
		d.sum.Write(s)
		d.summed += int64(len(s))
		if err := d.verified(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// advance moves the offset past b, the bytes just delivered, hashing them
// on a verified read (the last span was hashed by span).
func (d *Download) advance(b []byte) {
	if d.verify && d.summed == d.off {
		d.sum.Write(b)
		d.summed += int64(len(b))
	}
	d.off += int64(len(b))
}

// verified checks the checksum once a verified read has hashed every byte,
// and returns the (sticky) mismatch.
func (d *Download) verified() error {
	if d.verify && d.summed == d.Size() {
		d.verify = false // checked once; later reads at the end say io.EOF
		if got := "sha256:" + hex.EncodeToString(d.sum.Sum(nil)); got != d.job.Checksum {
			d.err = d.errorf(fmt.Errorf("%w: checksum %s, recorded %s", ErrCorrupt, got, d.job.Checksum))
		}
	}
	return d.err
}

// ReadAt implements io.ReaderAt. It does not verify the checksum, and it
// may be called concurrently with itself and with the other methods.
func (d *Download) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, d.errorf(errDownloadClosed)
	}
	if off < 0 {
		return 0, d.errorf(fmt.Errorf("%w: ReadAt offset %d", ErrInvalid, off))
	}
	n := 0
	for n < len(p) && off+int64(n) < d.Size() {
		pos := off + int64(n)
		idx := pos / d.chunk
		want := (int64(len(p)-n) + pos - idx*d.chunk + d.chunk - 1) / d.chunk
		chunks, err := d.fetch(idx, int(min(want, int64(d.batch))))
		if err != nil {
			return n, err
		}
		for i, c := range chunks {
			start := max(pos-(idx+int64(i))*d.chunk, 0)
			n += copy(p[n:], c[start:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek implements io.Seeker. Seeking to offset 0 restarts verification;
// seeking anywhere else ends it for this Download.
func (d *Download) Seek(offset int64, whence int) (int64, error) {
	if d.closed.Load() {
		return 0, d.errorf(errDownloadClosed)
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = d.off
	case io.SeekEnd:
		base = d.Size()
	default:
		return 0, d.errorf(fmt.Errorf("%w: Seek whence %d", ErrInvalid, whence))
	}
	abs := base + offset
	if offset > 0 && abs < base {
		return 0, d.errorf(fmt.Errorf("%w: Seek offset %d from %d overflows", ErrInvalid, offset, base))
	}
	if abs < 0 {
		return 0, d.errorf(fmt.Errorf("%w: Seek to negative offset %d", ErrInvalid, abs))
	}
	switch {
	case abs == 0:
		d.verify, d.summed, d.err = true, 0, nil
		d.sum.Reset()
	case abs != d.off:
		d.verify = false
	}
	d.off = abs
	return abs, nil
}

// fetch reads up to n chunks from index first, never past the last one,
// and checks that each has the length the job's size implies.
func (d *Download) fetch(first int64, n int) ([][]byte, error) {
	size := d.Size()
	last := (size - 1) / d.chunk
	n = int(min(int64(n), last-first+1))
	chunks, err := d.store.ReadChunks(d.ctx, d.job.ID, int(first), n)
	if err != nil {
		return nil, d.errorf(err)
	}
	if len(chunks) == 0 && n > 0 {
		return nil, d.errorf(fmt.Errorf("%w: chunks %d..%d are gone from Redis: the export's data was evicted or deleted (Redis must run with maxmemory-policy noeviction)",
			ErrCorrupt, first, first+int64(n)-1))
	}
	if len(chunks) != n {
		return nil, d.errorf(fmt.Errorf("%w: %d of chunks %d..%d stored", ErrCorrupt, len(chunks), first, first+int64(n)-1))
	}
	for i, c := range chunks {
		idx := first + int64(i)
		want := d.chunk
		if idx == last {
			want = size - last*d.chunk
		}
		if int64(len(c)) != want {
			return nil, d.errorf(fmt.Errorf("%w: chunk %d holds %d bytes, want %d", ErrCorrupt, idx, len(c), want))
		}
	}
	return chunks, nil
}

var _ interface {
	io.ReadSeekCloser
	io.ReaderAt
	io.WriterTo
} = (*Download)(nil)
