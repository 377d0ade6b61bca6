package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Fuzz targets. `go test` runs their seeds (f.Add and testdata/fuzz/<Name>/)
// as ordinary tests; `make fuzz-smoke` (part of `make test`) and `make fuzz`
// fuzz each one. The two targets that run exports share one miniredis and
// one Exporter per fuzz process, created on the first input, so that an
// iteration costs a few milliseconds.

// FuzzValidID: validID accepts exactly the canonical lower-case UUIDs, and
// never a string that could escape the per-job hash tag or form a pattern.
func FuzzValidID(f *testing.F) {
	for _, s := range []string{
		uuid.NewString(),
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59",
		"9B2F0D8E-2C1A-4E55-9A3B-6E1D2C3B4A59",          // upper case
		"{9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59}",        // braces: uuid.Parse takes it
		"urn:uuid:9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59", // URN: uuid.Parse takes it
		"9b2f0d8e2c1a4e559a3b6e1d2c3b4a59",              // no dashes: uuid.Parse takes it
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a5*",
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a5 ",
		"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a}{",
		"9b2f0d8e-2c1a-4e55-9a3b_6e1d2c3b4a59",
		"00000000-0000-0000-0000-000000000000",
		"",
	} {
		f.Add(s)
	}
	store := NewRedisStore(nil)
	f.Fuzz(func(t *testing.T, s string) {
		got := validID(s)
		_, err := uuid.Parse(s)
		want := err == nil && s == strings.ToLower(s) && len(s) == 36 &&
			s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-'
		if got != want {
			t.Fatalf("validID(%q) = %v, want %v (uuid.Parse: %v)", s, got, want, err)
		}
		if !got {
			return
		}
		if strings.ContainsAny(s, "{}:*") || strings.ContainsFunc(s, unicode.IsSpace) {
			t.Fatalf("validID accepted %q", s)
		}
		// An accepted id names its own three keys and nothing else.
		for _, k := range store.keys(s) {
			if !strings.HasPrefix(k, DefaultPrefix+"{"+s+"}:") || strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
				t.Fatalf("id %q makes key %q", s, k)
			}
		}
	})
}

// FuzzJobCodec: a job built from the inputs survives encodeJob, the hash the
// create script writes and decodeJob unchanged, and parseEvent of the event
// the scripts would publish for it returns it. decodeJob of an arbitrary
// hash and parseEvent of an arbitrary payload never panic and either fail
// cleanly (ErrCorrupt, not ok) or return something consistent.
func FuzzJobCodec(f *testing.F) {
	f.Add("alice", "filename", "report.csv", int64(100), int64(50), uint8(2), "sha256:00", int64(1700000000000), uint32(86400000), uint32(65520), []byte("\x01\x00x\x00\x03\x00running"))
	f.Add("bob", "", "", int64(0), int64(0), uint8(0), "", int64(0), uint32(1), uint32(0), []byte{})
	f.Add("o w:n", "ключ", "値 \"quoted\" {}", int64(math.MaxInt64), int64(1), uint8(3), "exporter: worker lost", int64(1), uint32(math.MaxUint32), uint32(math.MaxUint32), []byte("9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59 completed 2:id36:"))
	f.Add("x", "k", "\xff", int64(-1), int64(-5), uint8(4), "", int64(-1), uint32(0), uint32(1023), []byte("\x07\x00null\x00\x08\x00{\"a\":1}"))
	statuses := []Status{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}
	f.Fuzz(func(t *testing.T, owner, mdKey, mdVal string, total, nbytes int64, status uint8, text string,
		created int64, retentionMs, chunk uint32, raw []byte) {
		var u uuid.UUID
		copy(u[:], raw)
		id := u.String()

		// Round trip, for the jobs the Exporter can create: an owner (an
		// authenticated user), a WithTotal and a WithMetadata StartExport
		// accepts, counts that are never negative.
		var o startOptions
		WithTotal(total)(&o)
		if mdKey != "" || mdVal != "" {
			WithMetadata(map[string]string{mdKey: mdVal})(&o)
		}
		h := map[string]string(nil)
		if owner != "" && nbytes >= 0 && o.validate(math.MaxInt64) == nil {
			job := &Job{ID: id, Owner: owner, Status: statuses[int(status)%len(statuses)], Bytes: nbytes,
				Total: o.total, Metadata: o.metadata,
				ChunkSize: minChunkSize + int(chunk%(maxChunkSize-minChunkSize+1))}
			retention := time.Duration(max(retentionMs, 1)) * time.Millisecond
			h = fuzzStoredHash(t, job, retention, created&math.MaxInt64, text)
			got, err := decodeJob(h)
			require.NoError(t, err)
			want := job.clone()
			want.Read = want.Bytes // no progress recorded: Read is Bytes
			want.CreatedAt, want.UpdatedAt = fuzzTime(created&math.MaxInt64), fuzzTime(created&math.MaxInt64)
			want.ExpiresAt = want.UpdatedAt.Add(retention)
			if job.Status.Terminal() {
				want.StartedAt, want.FinishedAt = want.CreatedAt, want.CreatedAt
			}
			if job.Status == StatusCompleted {
				want.Checksum = text
			} else if job.Status.Terminal() {
				want.Error = text
			}
			require.Equal(t, want, got)

			// The event a script publishes when the job ends carries it.
			if !job.Status.Terminal() {
				h[fStatus] = string(StatusFailed)
			}
			ev, ok := parseEvent(fuzzEventPayload(id, Status(h[fStatus]), h))
			require.True(t, ok)
			require.Equal(t, id, ev.ID)
			require.Equal(t, Status(h[fStatus]), ev.Status)
			want, err = decodeJob(h)
			require.NoError(t, err)
			require.Equal(t, want, ev.Job)
		}

		// An arbitrary hash, on its own or over the good one.
		bad := fuzzHash(raw, h)
		if j, err := decodeJob(bad); err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			require.Nil(t, j)
		} else {
			require.NotEmpty(t, j.ID)
			require.NotEmpty(t, j.Owner)
			require.True(t, j.Status.valid(), j.Status)
			require.True(t, j.Bytes >= 0 && j.Total >= 0, "negative counts decoded")
			require.True(t, j.ChunkSize >= minChunkSize && j.ChunkSize <= maxChunkSize, j.ChunkSize)
		}

		// Arbitrary payloads, raw and behind a valid id and status.
		for _, payload := range []string{string(raw), id + " " + text + " " + string(raw),
			id + " " + string(statuses[int(status)%len(statuses)]) + " " + string(raw)} {
			ev, ok := parseEvent(payload)
			if !ok {
				require.Equal(t, Event{}, ev)
				continue
			}
			require.True(t, validID(ev.ID), ev.ID)
			require.True(t, ev.Status.valid(), ev.Status)
			if !ev.Status.Terminal() {
				require.Nil(t, ev.Job, "a progress event carries no job")
			}
			if ev.Job != nil {
				require.Equal(t, ev.ID, ev.Job.ID)
				require.Equal(t, ev.Status, ev.Job.Status)
			}
		}
	})
}

func fuzzTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// fuzzStoredHash is the hash Redis holds for job: what scriptCreate writes
// (encodeJob's fields, the times, an empty checksum and error, the lease
// TTL), then for a terminal job what finish sets.
func fuzzStoredHash(t *testing.T, job *Job, retention time.Duration, ms int64, text string) map[string]string {
	t.Helper()
	fields, err := encodeJob(job, retention)
	require.NoError(t, err)
	require.Zero(t, len(fields)%2)
	now := fmt.Sprint(ms)
	h := map[string]string{fCreated: now, fUpdated: now, fStarted: "0", fFinished: "0",
		fChecksum: "", fError: "", fLease: "15000"}
	for i := 0; i < len(fields); i += 2 {
		k, ok := fields[i].(string)
		require.True(t, ok, "field name %v", fields[i])
		v, ok := fields[i+1].(string)
		require.True(t, ok, "field %s value %v is not a string", k, fields[i+1])
		h[k] = v
	}
	if job.Status.Terminal() {
		h[fStarted], h[fFinished] = now, now
		if job.Status == StatusCompleted {
			h[fChecksum] = text
		} else {
			h[fError] = text
		}
	}
	return h
}

// fuzzEventPayload packs h as the scripts' finish does: "<id> <status> "
// and then every field and value as <length>:<bytes>, in HGETALL order
// (which is no particular order: sorted here).
func fuzzEventPayload(id string, st Status, h map[string]string) string {
	var b strings.Builder
	b.WriteString(id + " " + string(st) + " ")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%d:%s%d:%s", len(k), k, len(h[k]), h[k])
	}
	return b.String()
}

var fuzzFieldNames = []string{fID, fOwner, fStatus, fBytes, fTotal, fChecksum, fError, fMetadata,
	fChunk, fCreated, fStarted, fUpdated, fFinished, fRetention, fLease}

// fuzzHash builds a hash from raw: NUL-separated key, value, key, ...; a
// one-byte key names one of the job's fields. An odd first byte starts
// from base (when there is one), so that most fields are good.
func fuzzHash(raw []byte, base map[string]string) map[string]string {
	h := map[string]string{}
	if len(raw) > 0 && raw[0]%2 == 1 {
		for k, v := range base {
			h[k] = v
		}
	}
	tokens := bytes.Split(raw, []byte{0})
	for i := 0; i+1 < len(tokens); i += 2 {
		k := string(tokens[i])
		if len(tokens[i]) == 1 {
			k = fuzzFieldNames[int(tokens[i][0])%len(fuzzFieldNames)]
		}
		h[k] = string(tokens[i+1])
	}
	return h
}

// fuzzExporter is the miniredis and the Exporter one fuzz target shares
// across its inputs. It is created on the first input (in fuzzing mode the
// coordinator process sets the target up but never runs an input) and
// closed by f.Cleanup.
type fuzzExporter struct {
	cfg    Config
	mr     *miniredis.Miniredis
	client *redis.Client
	store  *RedisStore
	x      *Exporter
}

func newFuzzExporter(f *testing.F, cfg Config) *fuzzExporter {
	fx := &fuzzExporter{cfg: cfg}
	f.Cleanup(func() {
		if fx.x != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			fx.x.Shutdown(ctx)
			fx.client.Close()
			fx.mr.Close()
		}
	})
	return fx
}

func (fx *fuzzExporter) get(t *testing.T) *Exporter {
	t.Helper()
	if fx.x != nil {
		return fx.x
	}
	mr := miniredis.NewMiniRedis()
	require.NoError(t, mr.Start())
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	store := NewRedisStore(client).WithPrefix("fuzz:")
	x, err := New(store, fx.cfg)
	if err != nil {
		client.Close()
		mr.Close()
		t.Fatal(err)
	}
	fx.mr, fx.client, fx.store, fx.x = mr, client, store, x
	return x
}

// forget deletes job id's keys, so that a long fuzzing run does not fill
// miniredis.
func (fx *fuzzExporter) forget(id string) {
	for _, k := range fx.store.keys(id) {
		fx.mr.Del(k)
	}
}

func fuzzCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func fuzzSum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

const (
	fuzzChunk    = 1024
	fuzzMaxBytes = 64<<10 - 100 // not a multiple of the chunk size
)

// How a fuzzSource ends.
const (
	fuzzEndEOF         = iota // (0, io.EOF) after the data
	fuzzEndEOFWithLast        // io.EOF alongside the last bytes
	fuzzEndErr                // (0, err) at the error position
	fuzzEndErrWithLast        // err alongside the bytes up to the error position
	fuzzEndPanic              // a panic at the error position
	fuzzEndKinds
)

var errFuzzSource = errors.New("fuzz source failed")

// fuzzSource is an export source driven by a fuzz input:
//
//	in[0]       how it ends (mod fuzzEndKinds)
//	in[1]       number of read sizes - 1 (mod 8)
//	in[2]       the data is in[5+sizes:] repeated 1 + in[2]%96 times
//	in[3:5]     the error position (little-endian, mod len(data)+1), for
//	            the error endings
//	in[5:...]   read sizes, cycled: 0 is an empty read (0, nil), 1-127
//	            that many bytes, 128-255 (b-127)*96 bytes
//
// It never returns more than 99 empty reads in a row.
type fuzzSource struct {
	end   int
	sizes []int
	unit  []byte // the data is unit repeated
	size  int    // len(data)
	limit int    // bytes delivered before the end

	pos, next, empties int
	ended              bool // the end was returned (or panicked)
	readsAfterEnd      int
	readsAfterClose    atomic.Int32
	closes             atomic.Int32
	closed             chan struct{}
}

func newFuzzSource(in []byte) *fuzzSource {
	hdr := make([]byte, 5)
	copy(hdr, in)
	in = in[min(len(in), 5):]
	n := 1 + int(hdr[1]%8)
	sizes := make([]int, n)
	for i := range sizes {
		var b byte
		if i < len(in) {
			b = in[i]
		}
		switch {
		case b < 128:
			sizes[i] = int(b)
		default:
			sizes[i] = int(b-127) * 96
		}
	}
	unit := in[min(len(in), n):]
	s := &fuzzSource{end: int(hdr[0]) % fuzzEndKinds, sizes: sizes, unit: unit, closed: make(chan struct{})}
	s.size = len(unit) * (1 + int(hdr[2]%96))
	s.limit = s.size
	if s.end >= fuzzEndErr {
		s.limit = int(binary.LittleEndian.Uint16(hdr[3:5])) % (s.size + 1)
	}
	return s
}

// data returns the bytes the source delivers up to n.
func (s *fuzzSource) data(n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, s.unit[:min(len(s.unit), n-len(out))]...)
	}
	return out
}

func (s *fuzzSource) Read(p []byte) (int, error) {
	if s.closes.Load() > 0 {
		s.readsAfterClose.Add(1)
	}
	if s.ended {
		s.readsAfterEnd++
		return 0, errors.New("fuzz source: Read after its end")
	}
	if s.pos == s.limit {
		return 0, s.finish()
	}
	size := s.sizes[s.next%len(s.sizes)]
	s.next++
	if size == 0 {
		if s.empties++; s.empties < maxEmptyReads {
			return 0, nil
		}
		size = len(p)
	}
	s.empties = 0
	n := min(size, len(p), s.limit-s.pos)
	for i := range n {
		p[i] = s.unit[(s.pos+i)%len(s.unit)]
	}
	s.pos += n
	if s.pos == s.limit && (s.end == fuzzEndEOFWithLast || s.end == fuzzEndErrWithLast) {
		return n, s.finish()
	}
	return n, nil
}

func (s *fuzzSource) finish() error {
	s.ended = true
	switch s.end {
	case fuzzEndEOF, fuzzEndEOFWithLast:
		return io.EOF
	case fuzzEndPanic:
		panic("fuzz source panics")
	}
	return errFuzzSource
}

func (s *fuzzSource) Close() error {
	if s.closes.Add(1) == 1 {
		close(s.closed)
	}
	return nil
}

// FuzzChunkingCopy runs a real export of a fuzzSource on miniredis
// (ChunkSize 1 KiB, MaxBytes 64 KiB - 100). A source that ends with io.EOF
// completes with exactly its bytes, stored in chunks of exactly ChunkSize
// but for the last; one that fails (or passes MaxBytes) fails with its
// reason and leaves no bytes stored. Job.Bytes is the number of bytes
// stored (for a failed job: before they were removed, whole chunks only).
// The source is closed exactly once and never read after its end.
func FuzzChunkingCopy(f *testing.F) {
	f.Add([]byte{fuzzEndEOF, 0, 0, 0, 0, 200, 'a', 'b', 'c'})
	f.Add([]byte{fuzzEndEOFWithLast, 2, 10, 0, 0, 0, 1, 255, 'x', 'y', 'z', 'w'})
	f.Add([]byte{fuzzEndErr, 1, 40, 0x00, 0x10, 7, 0, '0', '1', '2', '3', '4', '5', '6', '7'})
	f.Add([]byte{fuzzEndErrWithLast, 0, 95, 0xff, 0xff, 255, 'q'})
	f.Add([]byte{fuzzEndPanic, 3, 20, 0x34, 0x12, 0, 0, 0, 127, 'p', 'a', 'n', 'i', 'c'})
	f.Add([]byte{fuzzEndEOF, 0, 63, 0, 0, 128, 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P'}) // 16 bytes x 64: exactly one chunk
	f.Add([]byte{fuzzEndEOF, 0, 64, 0, 0, 128, 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P'}) // 16 bytes x 65: a chunk and a bit
	f.Add([]byte{})
	fx := newFuzzExporter(f, Config{ChunkSize: fuzzChunk, MaxBytes: fuzzMaxBytes})
	f.Fuzz(func(t *testing.T, in []byte) {
		x := fx.get(t)
		ctx := fuzzCtx(t)
		src := newFuzzSource(in)
		job, err := x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		defer fx.forget(job.ID)
		job, err = x.WaitExport(ctx, alice, job.ID)
		require.NoError(t, err, "export never ended")
		select {
		case <-src.closed:
		case <-ctx.Done():
			t.Fatal("source was never closed")
		}
		chunks, err := fx.store.ReadChunks(ctx, job.ID, 0, 1<<20)
		require.NoError(t, err)
		stored := 0
		for _, c := range chunks {
			stored += len(c)
		}

		switch {
		case src.end < fuzzEndErr && src.size <= fuzzMaxBytes:
			require.Equal(t, StatusCompleted, job.Status, "job error: %s", job.Error)
			data := src.data(src.size)
			require.Equal(t, int64(len(data)), job.Bytes)
			require.Equal(t, fuzzSum(data), job.Checksum)
			require.Equal(t, stored, len(data))
			for i, c := range chunks {
				if i < len(chunks)-1 {
					require.Len(t, c, fuzzChunk, "chunk %d of %d", i, len(chunks))
				} else {
					require.True(t, len(c) > 0 && len(c) <= fuzzChunk, "last chunk of %d bytes", len(c))
				}
			}
			d, err := x.OpenExport(ctx, alice, job.ID)
			require.NoError(t, err)
			var got bytes.Buffer
			_, err = io.Copy(&got, d)
			require.NoError(t, err)
			require.NoError(t, d.Close())
			fuzzRequireBytes(t, data, got.Bytes(), "download")
		default:
			require.Equal(t, StatusFailed, job.Status)
			require.Empty(t, chunks, "a failed export keeps no bytes")
			require.Zero(t, job.Bytes%fuzzChunk, "bytes %d are not whole chunks", job.Bytes)
			require.LessOrEqual(t, job.Bytes, int64(min(src.limit, fuzzMaxBytes)))
			switch {
			case src.end < fuzzEndErr,
				src.limit > fuzzMaxBytes && errors.Is(job.Err(), ErrTooLarge): // the error was not read yet
				require.ErrorIs(t, job.Err(), ErrTooLarge, job.Error)
			case src.end == fuzzEndPanic:
				require.Contains(t, job.Error, "panicked")
			default:
				require.Contains(t, job.Error, errFuzzSource.Error())
			}
		}
		require.Zero(t, src.readsAfterEnd, "Read after the source's end")
		require.Zero(t, src.readsAfterClose.Load(), "Read after Close")
		require.Equal(t, int32(1), src.closes.Load(), "Close calls")
	})
}

// fuzzRequireBytes fails unless got equals want (nil and empty alike),
// and says where they differ rather than printing them.
func fuzzRequireBytes(t *testing.T, want, got []byte, what string) {
	t.Helper()
	if bytes.Equal(want, got) {
		return
	}
	i := 0
	for i < min(len(want), len(got)) && want[i] == got[i] {
		i++
	}
	t.Fatalf("%s: %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
}

// fuzzOps reads an operation script; past its end it reads zeros.
type fuzzOps struct{ b []byte }

func (o *fuzzOps) more() bool { return len(o.b) > 0 }

func (o *fuzzOps) byte() byte {
	if len(o.b) == 0 {
		return 0
	}
	c := o.b[0]
	o.b = o.b[1:]
	return c
}

// length is 0 to about 4.4 KiB, often a multiple of 512.
func (o *fuzzOps) length() int { return int(o.byte()%9)*512 + int(o.byte()) }

// offset is -128 to about 47 KiB, often near a chunk boundary.
func (o *fuzzOps) offset() int64 {
	return int64(o.byte()%48)*fuzzChunk + int64(int8(o.byte()))
}

func (o *fuzzOps) int64() int64 {
	var b [8]byte
	for i := range b {
		b[i] = o.byte()
	}
	return int64(binary.LittleEndian.Uint64(b[:]))
}

// fuzzLimitWriter takes max bytes, then fails.
type fuzzLimitWriter struct {
	buf bytes.Buffer
	max int
}

var errFuzzWriterFull = errors.New("writer full")

func (w *fuzzLimitWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); len(p) > room {
		w.buf.Write(p[:room])
		return room, errFuzzWriterFull
	}
	return w.buf.Write(p)
}

// FuzzDownload drives a Download with an operation script and compares
// every answer with bytes.Reader's on the same bytes. The export's size and
// content come from the input:
//
//	in[0], in[1]  size = (in[0]%48) KiB + int8(in[1]), at least 0
//	in[2]         seed of the content
//	in[3:]        operations (see the switch)
//
// Completed exports are cached by content hash, so most inputs only read.
func FuzzDownload(f *testing.F) {
	f.Add([]byte{3, 0, 1, 0, 2, 0, 4, 6, 0, 2, 2})
	f.Add([]byte{0, 0, 0, 0, 1, 0, 4, 1, 0, 0, 0, 0, 5, 0})
	f.Add([]byte{1, 0, 9, 0, 1, 0xff, 2, 2, 3, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 2, 0})
	f.Add([]byte{17, 0x80, 2, 1, 4, 0, 3, 0, 2, 0, 2, 1, 4, 0xff, 6, 0, 7, 3, 0, 5, 20, 0, 0, 8})
	f.Add([]byte{47, 127, 3, 4, 0, 5, 40, 7, 1, 0, 1, 8, 100, 2, 0, 0, 0, 0, 3, 2, 255, 255, 255, 255, 255, 255, 255, 127, 0, 1})
	fx := newFuzzExporter(f, Config{ChunkSize: fuzzChunk})
	cache := map[[32]byte]string{}
	f.Fuzz(func(t *testing.T, in []byte) {
		x := fx.get(t)
		ctx := fuzzCtx(t)
		hdr := make([]byte, 3)
		copy(hdr, in)
		ops := &fuzzOps{b: in[min(len(in), 3):]}
		size := max(int(hdr[0]%48)*fuzzChunk+int(int8(hdr[1])), 0)
		var seed [32]byte
		seed[0] = hdr[2]
		data := make([]byte, size)
		rand.NewChaCha8(seed).Read(data)

		key := sha256.Sum256(data)
		id, ok := cache[key]
		if !ok {
			if len(cache) >= 256 { // keep miniredis small on long runs
				fx.mr.FlushAll()
				clear(cache)
			}
			job, err := x.StartExport(ctx, alice, bytes.NewReader(data))
			require.NoError(t, err)
			job, err = x.WaitExport(ctx, alice, job.ID)
			require.NoError(t, err)
			require.Equal(t, StatusCompleted, job.Status, "job error: %s", job.Error)
			id = job.ID
			cache[key] = id
		}
		d, err := x.OpenExport(ctx, alice, id)
		require.NoError(t, err)
		require.Equal(t, int64(size), d.Size())
		require.Equal(t, fuzzSum(data), d.Job().Checksum)
		ref := bytes.NewReader(data)

		for i := 0; i < 64 && ops.more(); i++ {
			switch op := ops.byte() % 8; op {
			case 0: // Read may return short reads; io.ReadFull makes them comparable
				p := make([]byte, ops.length())
				q := make([]byte, len(p))
				n, err := io.ReadFull(d, p)
				m, rerr := io.ReadFull(ref, q)
				require.Equal(t, m, n, "op %d ReadFull(%d)", i, len(p))
				require.Equal(t, q[:m], p[:n], "op %d ReadFull(%d)", i, len(p))
				require.Equal(t, rerr, err, "op %d ReadFull(%d)", i, len(p))
			case 1: // one Read: a prefix of what bytes.Reader would give
				p := make([]byte, ops.length())
				n, err := d.Read(p)
				require.True(t, n >= 0 && n <= len(p), "op %d Read returned %d", i, n)
				if len(p) > 0 {
					require.False(t, n == 0 && err == nil, "op %d Read returned (0, nil)", i)
				}
				if err == io.EOF {
					require.Zero(t, n, "op %d Read returned bytes with io.EOF", i)
					require.Zero(t, ref.Len(), "op %d Read returned io.EOF before the end", i)
					continue
				}
				require.NoError(t, err, "op %d Read", i)
				q := make([]byte, n)
				m, _ := io.ReadFull(ref, q)
				require.Equal(t, n, m, "op %d Read past the end", i)
				require.Equal(t, q, p[:n], "op %d Read", i)
			case 2: // ReadAt, as io.ReaderAt allows: at the end, err may be nil or io.EOF
				p, off := make([]byte, ops.length()), ops.offset()
				q := make([]byte, len(p))
				n, err := d.ReadAt(p, off)
				m, rerr := ref.ReadAt(q, off)
				require.Equal(t, m, n, "op %d ReadAt(%d, %d): %v", i, len(p), off, err)
				require.Equal(t, q[:m], p[:n], "op %d ReadAt(%d, %d)", i, len(p), off)
				switch {
				case rerr != nil && rerr != io.EOF:
					require.Error(t, err, "op %d ReadAt(%d, %d)", i, len(p), off)
					require.NotErrorIs(t, err, io.EOF)
				case m < len(q):
					require.ErrorIs(t, err, io.EOF, "op %d ReadAt(%d, %d)", i, len(p), off)
				default:
					require.True(t, err == nil || err == io.EOF, "op %d ReadAt(%d, %d): %v", i, len(p), off, err)
				}
			case 3: // Seek, whence 3 is invalid
				off, whence := ops.offset(), int(ops.byte()%4)
				got, err := d.Seek(off, whence)
				want, rerr := ref.Seek(off, whence)
				require.Equal(t, rerr == nil, err == nil, "op %d Seek(%d, %d): %v vs %v", i, off, whence, err, rerr)
				if err == nil {
					require.Equal(t, want, got, "op %d Seek(%d, %d)", i, off, whence)
				}
			case 4: // Seek anywhere an int64 reaches, overflow included
				off, whence := ops.int64(), int(ops.byte()%3)
				got, err := d.Seek(off, whence)
				want, rerr := ref.Seek(off, whence)
				require.Equal(t, rerr == nil, err == nil, "op %d Seek(%d, %d): %v vs %v", i, off, whence, err, rerr)
				if err == nil {
					require.Equal(t, want, got, "op %d Seek(%d, %d)", i, off, whence)
				}
			case 5: // WriteTo
				var a, b bytes.Buffer
				n, err := d.WriteTo(&a)
				m, rerr := ref.WriteTo(&b)
				require.NoError(t, rerr)
				require.NoError(t, err, "op %d WriteTo", i)
				require.Equal(t, m, n, "op %d WriteTo", i)
				require.Equal(t, b.Bytes(), a.Bytes(), "op %d WriteTo", i)
			case 6: // WriteTo a writer that fills up
				limit := int(ops.byte()) * 256
				a, b := &fuzzLimitWriter{max: limit}, &fuzzLimitWriter{max: limit}
				n, err := d.WriteTo(a)
				m, rerr := ref.WriteTo(b)
				require.Equal(t, m, n, "op %d WriteTo(%d-byte writer)", i, limit)
				require.Equal(t, rerr, err, "op %d WriteTo(%d-byte writer)", i, limit)
				require.Equal(t, b.buf.Bytes(), a.buf.Bytes(), "op %d WriteTo(%d-byte writer)", i, limit)
			case 7: // back to the start: verification starts again
				_, err := d.Seek(0, io.SeekStart)
				require.NoError(t, err)
				_, err = ref.Seek(0, io.SeekStart)
				require.NoError(t, err)
			}
		}

		require.NoError(t, d.Close())
		require.NoError(t, d.Close(), "Close is idempotent")
		_, err = d.Read(make([]byte, 1))
		require.ErrorIs(t, err, fs.ErrClosed)
		_, err = d.ReadAt(make([]byte, 1), 0)
		require.ErrorIs(t, err, fs.ErrClosed)
		_, err = d.Seek(0, io.SeekStart)
		require.ErrorIs(t, err, fs.ErrClosed)
		_, err = d.WriteTo(io.Discard)
		require.ErrorIs(t, err, fs.ErrClosed)
	})
}
