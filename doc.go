// Package exporter runs export jobs on Redis. A service hands StartExport
// a User and an io.Reader and gets a pending Job back at once; the reader's
// bytes are streamed into Redis in chunks in the background. Any instance
// that shares the Redis can then report the job's progress, wait for its
// end, cancel it, and serve the finished bytes as a download.
//
// # Usage
//
//	client := redis.NewClient(&redis.Options{
//		Addr:                  "localhost:6379",
//		ContextTimeoutEnabled: true, // see "Redis client options" below
//	})
//	exp, err := exporter.New(exporter.NewRedisStore(client), exporter.Config{})
//	if err != nil { ... }
//	defer exp.Shutdown(ctx)
//
//	job, err := exp.StartExport(ctx, user, rows,
//		exporter.WithTotal(size),
//		exporter.WithMetadata(map[string]string{exporter.MetadataFilename: "rows.csv"}))
//	...
//	job, err = exp.WaitExport(ctx, user, job.ID) // or poll GetExportStatus
//	...
//	d, err := exp.OpenExport(r.Context(), user, job.ID)
//	if err != nil { ... }
//	defer d.Close()
//	http.ServeContent(w, r, job.Metadata[exporter.MetadataFilename], job.FinishedAt, d)
//
// The user must hold Config.Permission ("exporter" by default) to start an
// export; afterwards only the job's owner and holders of
// Config.AdminPermission can see, wait for, cancel or open it. To anyone
// else the job does not exist (ErrNotFound).
//
// The copy runs after StartExport has returned, under the Exporter's own
// context, so the reader must not depend on the caller's request: not an
// http.Request's Body, nor a query bound to the request's context.
// StartExport takes ownership of the reader: an io.Closer is closed exactly
// once, when the export ends however it ends.
//
// For HTTP, package exporterhttp is a ready http.Handler for all of this:
// start by kind, list, status, cancel, download (http.ServeContent, with
// Content-Disposition) and Server-Sent Events, and an opt-in operator's
// dashboard.
//
// # Operators
//
// Holders of Config.AdminPermission see every owner's exports with
// ListOptions.AllOwners (newest first; ListOptions.Status filters), and
// every running instance with Instances: what each runs and holds
// pending, its runs by outcome, failures by code (Job.ErrorCode) and the
// bytes it stores per second. Both are optional abilities of the Store
// (AllLister, InstanceBoard); RedisStore has them. Listing every owner
// reads a cross-owner index kept in 16 sorted sets picked by the job id's
// hash, so creations spread over 16 Cluster slots and no key is hot.
//
// # Durable exports
//
// StartExport's reader exists only in its process: if the process dies,
// the export fails (ErrWorkerLost). Enqueue records an export by kind and
// args instead, and any Exporter whose Config.Sources has the kind runs
// it. When the instance that runs it dies, loses the store for longer
// than its lease, or shuts down, another instance resumes it from the
// bytes already stored: its Source is opened at that offset and the
// SHA-256 carries on from the stored state, so the result is that of an
// uninterrupted run. A failed attempt is retried after a backoff, up to
// Config.MaxAttempts, unless its error wraps ErrPermanent. Use StartExport
// for bytes that only this process can produce; use Enqueue for exports
// that can be described (a query, a file, a report) and must survive
// deploys and crashes.
//
// # Lifecycle
//
// A job's Status only moves forward:
//
//	pending -> running -> completed | failed | cancelled
//
// A pending job waits for a run slot on the instance that accepted it
// (Config.MaxRunning); it may also go straight to failed or cancelled. The
// three terminal statuses never change. A job fails when its reader or
// Redis returns an error, when it passes Config.MaxBytes (ErrTooLarge),
// when Shutdown gives up on it (ErrClosed), or when its instance stops
// renewing its lease (ErrWorkerLost, seen by the next reader once the
// lease lapses). The reason is stored as a stable code (Job.ErrorCode, one
// of the Code constants) beside its text (Job.Error); Job.Err maps the code
// back to an error that wraps the matching sentinel. A cancelled or failed job's bytes are
// removed; a completed job keeps them, with their SHA-256 in Job.Checksum.
// Every job and its bytes expire Config.Retention after their last update.
//
// # Keys and guarantees
//
// RedisStore documents the key layout: the keys of a job share one hash
// tag, <prefix>{<id>}:meta, :data, :lease (and :watch while someone runs
// WatchExport), each owner's exports are indexed for ListExports, and one
// pub/sub channel, <prefix>events, announces ends (cancels included) and
// the progress of watched exports. Every state change is a single Lua
// script that checks the job's status and the running instance's lease
// token before writing, and sets the keys' TTLs in the same step, so a
// cancel cannot be overwritten by a late chunk, a finished job cannot be
// cancelled, and an instance that lost its lease cannot write.
//
// CancelExport records the cancel in Redis before it returns, then
// publishes it; the running instance, wherever it is, stops and closes
// its reader when the message arrives, or at the latest at its next chunk
// write or lease renewal (every Config.LeaseTTL/3), which re-check the
// stored state.
//
// # Redis client options
//
// Create the go-redis client with ContextTimeoutEnabled: true. Then every
// call returns by its ctx's deadline or cancellation. Without it go-redis
// bounds a wait on Redis only by its ReadTimeout (3 s by default) and
// ignores ctx while it waits, so a ctx deadline shorter than that is not
// honoured.
//
// A chunk write may reach Redis twice, late, or in part: go-redis gives up
// on a connection whose reply is late and what it had sent may still
// arrive, and the Exporter repeats a write that failed for a reason that
// may pass. So a chunk write is one MULTI/EXEC of the chunks' RPUSHX and
// the script that checks them (Redis discards a transaction that never
// reached EXEC), and each carries its index: a chunk whose index is already
// stored is ignored, and repeating the final write is harmless.
//
// Run Redis with maxmemory-policy noeviction: every key here has a TTL, so
// other policies may evict any of them (an Exporter logs a warning naming
// the policy when it is another). Above maxmemory, Redis then refuses new
// exports and new bytes, and every ending is still recorded.
//
// RedisStore never closes the client it is given; close it after Shutdown.
//
// # Redis Cluster and Sentinel
//
// NewRedisStore accepts any redis.UniversalClient: a *redis.Client, a
// failover client (redis.NewFailoverClient, for Sentinel-managed servers)
// or a *redis.ClusterClient. A job's keys share the hash tag {<id>}, so each
// script touches one Cluster slot and jobs spread over all the slots. Use
// RedisStore.WithPrefix to share one Redis between services; a prefix
// must not contain '{' or '}'.
//
// Redis replicates asynchronously, so a failover can lose the last writes
// made before it. The scripts then work on the job as the new master has
// it: a chunk that no longer follows the stored ones fails the job, a job
// left pending or running by an instance that has moved on fails with
// ErrWorkerLost when its lease lapses, and a Download that finds chunks
// missing or bytes that do not match Job.Checksum returns an error wrapping
// ErrCorrupt.
//
// # Logs and metrics
//
// Config.Logger receives log/slog records; those about an export carry its
// id and owner as the attributes "job" and "owner". Config.MeterProvider
// receives OpenTelemetry metrics under the scope MeterName: the counters
// exporter.exports.started, exporter.exports.ended (attribute status:
// completed, failed or cancelled) and exporter.bytes.stored, the histogram
// exporter.export.duration (seconds, by status) and the gauges
// exporter.exports.pending and exporter.exports.running. Each instance
// reports the exports it accepted and ran; an export counts once, where
// it ran, however it ended.
package exporter
