package exporter

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// Config configures an Exporter. The zero Config is valid: every field
// documents its default. Negative values are invalid.
type Config struct {
	// Permission is needed to start an export. "" means "exporter".
	Permission string
	// AdminPermission lets its holders see, cancel and open any user's
	// exports. "" means nobody has that power.
	AdminPermission string
	// Permissions checks both permissions. nil checks User.Permissions.
	Permissions PermissionChecker
	// ChunkSize is the number of bytes per stored chunk, 1 KiB to 16 MiB.
	// 0 means 64 KiB - 16 bytes (65520). Redis stores a chunk with a small
	// header, and its allocator rounds a chunk of exactly a power of two up
	// by 25% (measured: 1.25 bytes of Redis memory per byte at 65536, 1.001
	// at 65520), so choose a size a little under a power of two. Each job
	// records its own, so instances with different values read each
	// other's exports.
	ChunkSize int
	// MaxBytes is the largest export; one that passes it fails with
	// ErrTooLarge. 0 means 256 MiB.
	MaxBytes int64
	// MaxRunning is how many exports this Exporter copies at once. 0 means 16.
	MaxRunning int
	// MaxPending is how many accepted exports may wait for a run slot on
	// this Exporter; StartExport returns ErrBusy beyond it. 0 means 1024.
	MaxPending int
	// MaxPerUser caps one user's pending and running exports on this
	// Exporter (ErrBusy beyond it). 0 means no cap.
	MaxPerUser int
	// Retention is how long a job and its data live after their last
	// update. 0 means 24 hours.
	Retention time.Duration
	// LeaseTTL is how long a pending or running job survives its instance:
	// the instance renews the lease every LeaseTTL/3, and a job whose lease
	// lapses reads as failed with ErrWorkerLost. 0 means 15 seconds; at
	// least 100 ms.
	LeaseTTL time.Duration
	// MinReplicas is how many replicas must hold an export's bytes and its
	// seal (its checksum and chunk count) before it is recorded completed
	// (Redis WAIT, on the master that took them). A server that has the
	// seal completes the export itself if the completion was lost, so a
	// failover cannot take back an export reported completed. If the
	// replicas do not acknowledge within ReplicaTimeout (tried three times,
	// also across a failover), the export fails with ErrNotReplicated and
	// never read completed. 0 (the default) does not wait: replication is
	// asynchronous, so a failover right after a completion can lose it (the
	// export then fails with ErrWorkerLost, or is gone if its creation was
	// lost too). Either way an export never reads completed without its
	// bytes: replicas apply writes in order. See docs/failover.md.
	MinReplicas int
	// ReplicaTimeout bounds each WAIT for MinReplicas. 0 means 1 second.
	// Keep it below the client's ReadTimeout.
	ReplicaTimeout time.Duration
	// Logger receives the Exporter's log records. nil discards them.
	// Records about one export carry its id and owner as the attributes
	// "job" and "owner".
	Logger *slog.Logger
	// MeterProvider receives the Exporter's metrics (see MeterName and
	// the package documentation for the instruments). nil reports none.
	MeterProvider metric.MeterProvider

	// Sources are the kinds of durable export (Enqueue) this Exporter
	// runs, by name. An Exporter with Sources claims durable exports of
	// those kinds from the store's queue whenever it has a free run slot
	// (MaxRunning counts them with StartExport's), and resumes those whose
	// attempt was lost. Its background goroutines start at New. A kind is
	// 1 to 128 bytes of UTF-8 without spaces. The store must implement
	// Queue (RedisStore does).
	Sources map[string]Source
	// MaxAttempts is how many attempts a durable export that this
	// Exporter enqueues gets before it fails; attempts lost with their
	// instance count, those handed back by Shutdown do not. 0 means 3.
	MaxAttempts int
}

// Defaults and bounds of Config.
const (
	DefaultPermission = "exporter"
	DefaultChunkSize  = 64<<10 - 16
	DefaultMaxBytes   = 256 << 20
	DefaultMaxRunning = 16
	DefaultMaxPending = 1024
	DefaultRetention  = 24 * time.Hour
	DefaultLeaseTTL   = 15 * time.Second
	// DefaultMaxAttempts is MaxAttempts when 0.
	DefaultMaxAttempts = 3

	minChunkSize = 1 << 10
	maxChunkSize = 16 << 20
	minLeaseTTL  = 100 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.Permission == "" {
		c.Permission = DefaultPermission
	}
	if c.Permissions == nil {
		c.Permissions = userPermissions{}
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxRunning == 0 {
		c.MaxRunning = DefaultMaxRunning
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate checks a Config after withDefaults and names the bad field.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: Config."+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize:
		return bad("ChunkSize must be between 1 KiB and 16 MiB, not %d", c.ChunkSize)
	case c.MaxBytes < 0:
		return bad("MaxBytes must not be negative")
	case c.MaxRunning < 0:
		return bad("MaxRunning must not be negative")
	case c.MaxPending < 0:
		return bad("MaxPending must not be negative")
	case c.MaxPerUser < 0:
		return bad("MaxPerUser must not be negative")
	case c.MinReplicas < 0:
		return bad("MinReplicas must not be negative")
	case c.ReplicaTimeout < 0:
		return bad("ReplicaTimeout must not be negative")
	case c.Retention < time.Millisecond:
		return bad("Retention must be at least 1ms, not %v", c.Retention)
	case c.LeaseTTL < minLeaseTTL:
		return bad("LeaseTTL must be at least %v, not %v", minLeaseTTL, c.LeaseTTL)
	case c.Retention < c.LeaseTTL:
		return bad("Retention (%v) must not be shorter than LeaseTTL (%v)", c.Retention, c.LeaseTTL)
	case c.MaxAttempts < 0:
		return bad("MaxAttempts must not be negative")
	}
	for kind, src := range c.Sources {
		if !validKind(kind) {
			return bad("Sources: kind %q must be 1 to %d bytes of UTF-8 without spaces", kind, maxKind)
		}
		if src == nil {
			return bad("Sources: kind %q has a nil Source", kind)
		}
	}
	return nil
}
