package exporter

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Status is where an export is in its lifecycle. Statuses only move
// forward: pending -> running -> one terminal status (pending may also go
// straight to a terminal status). A terminal status never changes.
type Status string

// The statuses of an export.
const (
	StatusPending   Status = "pending"   // accepted, waiting for a run slot on its instance
	StatusRunning   Status = "running"   // the reader is being copied into the store
	StatusCompleted Status = "completed" // all bytes stored, checksum recorded
	StatusFailed    Status = "failed"    // reader error, size limit, worker lost, shutdown...
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether s is completed, failed or cancelled.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

func (s Status) valid() bool {
	return s == StatusPending || s == StatusRunning || s.Terminal()
}

// Job is a snapshot of an export as the store recorded it. Jobs returned by
// the Exporter are copies: changing one changes nothing stored. Its JSON
// form (snake_case names, unset times left out) suits an HTTP API.
type Job struct {
	ID         string            `json:"id"`                   // random UUID (v4) in canonical lower-case form, unguessable
	Owner      string            `json:"owner"`                // User.ID of the starter
	Status     Status            `json:"status"`               // see Status
	Bytes      int64             `json:"bytes"`                // bytes stored so far, a whole chunk at a time; never decreases (not reset when data is removed)
	Read       int64             `json:"read"`                 // bytes read from the source so far, at least Bytes: progress inside a chunk, recorded at least every second while the source delivers bytes; never decreases
	Total      int64             `json:"total"`                // expected size from WithTotal, 0 if unknown
	Checksum   string            `json:"checksum,omitempty"`   // "sha256:<64 hex>" of the stored bytes, set when completed
	Error      string            `json:"error,omitempty"`      // why it failed or was cancelled, for people; "" otherwise
	ErrorCode  string            `json:"error_code,omitempty"` // the same as a stable code (CodeCancelled, ...); "" otherwise (and in records stored before codes)
	Metadata   map[string]string `json:"metadata,omitempty"`   // from WithMetadata (e.g. filename, content type)
	ChunkSize  int               `json:"chunk_size"`           // bytes per stored chunk, recorded so any instance can read the data
	CreatedAt  time.Time         `json:"created_at"`           // when StartExport recorded it (store clock)
	StartedAt  time.Time         `json:"started_at,omitzero"`  // zero while pending
	UpdatedAt  time.Time         `json:"updated_at"`           // last change, progress or lease renewal
	FinishedAt time.Time         `json:"finished_at,omitzero"` // zero until terminal
	ExpiresAt  time.Time         `json:"expires_at"`           // when the job and its data disappear
	Kind       string            `json:"kind,omitempty"`       // the durable export's kind (Enqueue); "" for StartExport's
	Args       []byte            `json:"args,omitempty"`       // Enqueue's args, at most MaxArgs bytes; in JSON, the JSON value they hold, else base64 (see MarshalJSON)
	Attempt    int               `json:"attempt,omitempty"`    // attempts of a durable export begun so far: 1 once the first runs; 0 while never run
}

// Progress returns Read/Total in [0, 1] (the bytes read from the source,
// which moves inside a chunk), or 0 when Total is unknown. A completed
// export reports 1.
func (j *Job) Progress() float64 {
	read := max(j.Read, j.Bytes)
	switch {
	case j.Status == StatusCompleted:
		return 1
	case j.Total <= 0:
		return 0
	case read >= j.Total:
		return 1
	}
	return float64(read) / float64(j.Total)
}

func (j *Job) clone() *Job {
	c := *j
	if j.Metadata != nil {
		c.Metadata = make(map[string]string, len(j.Metadata))
		for k, v := range j.Metadata {
			c.Metadata[k] = v
		}
	}
	c.Args = slices.Clone(j.Args)
	return &c
}

// The job hash codec. A job is one Redis hash; these are its fields. Times
// are Unix milliseconds of the Redis server's clock, "0" when unset.
const (
	fID        = "id"
	fOwner     = "owner"
	fStatus    = "status"
	fBytes     = "bytes"
	fRead      = "read" // absent until a run records progress inside a chunk
	fTotal     = "total"
	fChecksum  = "checksum"
	fError     = "error"
	fCode      = "code" // Job.ErrorCode; absent in jobs recorded before codes
	fMetadata  = "md"   // JSON object, absent when there is no metadata
	fChunk     = "chunk"
	fCreated   = "created"
	fStarted   = "started"
	fUpdated   = "updated"
	fFinished  = "finished"
	fRetention = "retention" // ms; ExpiresAt = updated + retention
	fLease     = "lease"     // ms, the lease TTL of the instance that holds it

	// Durable exports only (Enqueue); absent in the others.
	fKind    = "kind"
	fArgs    = "args"
	fAttempt = "attempt" // attempts begun
	fHanded  = "handed"  // attempts handed back by Shutdown, which do not count
	fMaxAtt  = "maxatt"  // attempts allowed in all (MaxAttempts of the enqueuer)
	fHash    = "sha"     // the SHA-256 state of the stored chunks, for a resume
	fToken   = "token"   // the enqueuer's token, for Abandon
)

// encodeJob returns the fields written when a job is created, as
// alternating names and values. Timestamps are filled in by the store.
func encodeJob(j *Job, retention time.Duration) ([]any, error) {
	f := []any{
		fID, j.ID,
		fOwner, j.Owner,
		fStatus, string(j.Status),
		fBytes, strconv.FormatInt(j.Bytes, 10),
		fTotal, strconv.FormatInt(j.Total, 10),
		fChunk, strconv.Itoa(j.ChunkSize),
		fRetention, strconv.FormatInt(retention.Milliseconds(), 10),
	}
	if len(j.Metadata) > 0 {
		md, err := json.Marshal(j.Metadata)
		if err != nil {
			return nil, fmt.Errorf("encode metadata: %w", err)
		}
		f = append(f, fMetadata, string(md))
	}
	if j.Kind != "" {
		f = append(f, fKind, j.Kind, fArgs, string(j.Args), fAttempt, "0", fHanded, "0")
	}
	return f, nil
}

// decodeJob builds a Job from a job hash. It is strict: a hash that lacks
// a field the library always writes, or holds a value it never writes, is
// reported as corrupt rather than half-read.
func decodeJob(h map[string]string) (*Job, error) {
	j := &Job{ID: h[fID], Owner: h[fOwner], Status: Status(h[fStatus]),
		Checksum: h[fChecksum], Error: h[fError], ErrorCode: h[fCode]}
	if j.ID == "" || j.Owner == "" || !j.Status.valid() {
		return nil, fmt.Errorf("%w: job hash lacks id, owner or a valid status", ErrCorrupt)
	}
	ints := []struct {
		name string
		dst  *int64
	}{{fBytes, &j.Bytes}, {fTotal, &j.Total}}
	for _, f := range ints {
		n, err := parseInt(h, f.name)
		if err != nil {
			return nil, err
		}
		*f.dst = n
	}
	chunk, err := parseInt(h, fChunk)
	if err != nil {
		return nil, err
	}
	if chunk < minChunkSize || chunk > maxChunkSize {
		return nil, fmt.Errorf("%w: job %s: chunk size %d out of range", ErrCorrupt, j.ID, chunk)
	}
	j.ChunkSize = int(chunk)
	times := []struct {
		name string
		dst  *time.Time
	}{{fCreated, &j.CreatedAt}, {fStarted, &j.StartedAt}, {fUpdated, &j.UpdatedAt}, {fFinished, &j.FinishedAt}}
	for _, f := range times {
		ms, err := parseInt(h, f.name)
		if err != nil {
			return nil, err
		}
		if ms > 0 {
			*f.dst = time.UnixMilli(ms).UTC()
		}
	}
	ret, err := parseInt(h, fRetention)
	if err != nil {
		return nil, err
	}
	j.ExpiresAt = j.UpdatedAt.Add(time.Duration(ret) * time.Millisecond)
	j.Kind = h[fKind]
	if a, ok := h[fArgs]; ok {
		j.Args = []byte(a)
	}
	j.Read = j.Bytes
	if _, ok := h[fRead]; ok {
		n, err := parseInt(h, fRead)
		if err != nil {
			return nil, err
		}
		j.Read = max(n, j.Bytes)
	}
	if _, ok := h[fAttempt]; ok {
		n, err := parseInt(h, fAttempt)
		if err != nil {
			return nil, err
		}
		j.Attempt = int(n)
	}
	if md, ok := h[fMetadata]; ok {
		if err := json.Unmarshal([]byte(md), &j.Metadata); err != nil {
			return nil, fmt.Errorf("%w: job %s: metadata: %v", ErrCorrupt, j.ID, err)
		}
	}
	return j, nil
}

func parseInt(h map[string]string, name string) (int64, error) {
	v, ok := h[name]
	if !ok {
		return 0, fmt.Errorf("%w: job hash lacks %q", ErrCorrupt, name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: job hash field %q is %q", ErrCorrupt, name, v)
	}
	return n, nil
}

// ValidID reports whether id has the form of a Job.ID: a UUID in canonical
// lower-case form. The Exporter answers a malformed id as an unknown one
// (ErrNotFound); a tool or an API that would rather report a typing
// mistake can check with ValidID first.
func ValidID(id string) bool { return validID(id) }

// validID reports whether id is a UUID in canonical lower-case form, the
// only form the Exporter hands out. It is checked before any key is built.
func validID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
