// Package exporterhttp is the HTTP API of an exporter.Exporter: an
// http.Handler that starts durable exports, lists them, reports and
// streams their progress, cancels them and serves their downloads, so that
// a service does not write these endpoints itself.
//
// # Mounting
//
// Mount the Handler under a prefix with http.StripPrefix:
//
//	h, err := exporterhttp.New(exporterhttp.Config{
//		Exporter:     exp, // with Config.Sources["orders"]
//		Authenticate: userFromSession,
//		Kinds:        []string{"orders"},
//	})
//	if err != nil { ... }
//	mux.Handle("/exports/", http.StripPrefix("/exports", h))
//	srv.RegisterOnShutdown(h.CloseStreams)
//
// A ServeMux redirects "/exports" to "/exports/", and a client may turn a
// redirected POST into a GET: POST to "/exports/", or mount the exact path
// too (mux.Handle("/exports", http.StripPrefix("/exports", h))).
//
// # Routes
//
// Relative to the mount:
//
//	POST   /               start an export: 201 Created, Location, the job
//	GET    /               the caller's exports, newest first: {"exports": [job...], "next": cursor}
//	GET    /{id}           the job
//	DELETE /{id}           cancel it: 200 and the job; 409 "finished" once completed or failed
//	GET    /{id}/download  its bytes, once completed; 409 "not_completed" before
//	GET    /{id}/events    its progress as Server-Sent Events
//
// and, with Config.Dashboard, the operator's dashboard (see Dashboard
// below):
//
//	GET    /dashboard            the page
//	GET    /dashboard/exports    every owner's exports, or one owner's: {"exports": [job...], "next": cursor}
//	GET    /dashboard/instances  the running instances and their totals
//
// A job is the JSON of exporter.Job. The body of a POST is a JSON object
// of at most exporter.MaxArgs + 16 KiB:
//
//	{"kind": "orders", "args": {"month": "2026-11"}, "filename": "orders.csv", "metadata": {"content-type": "text/csv"}}
//
// kind is one of Config.Kinds; args, any JSON value, reaches the kind's
// exporter.Source as sent (Job.Args); filename, sanitized and shortened to
// 255 bytes with its extension kept, is stored as the metadata
// exporter.MetadataFilename; metadata goes to exporter.WithMetadata
// within its limits. The Location of the new export is the path the
// client sent with the id appended ("/exports/<id>"); when that path does
// not end with the one the Handler sees (a proxy rewrote it), it is the id
// alone, which resolves against the collection's URL "/exports/".
//
// Config.Prepare, if set, sees each POST's kind and args before the export
// is enqueued: it can refuse them (an error wrapping exporter.ErrInvalid is a
// 400 "invalid") and add options, such as exporter.WithTotal, so that a
// client can show a percentage.
//
// GET / takes ?limit= (1 to exporter.MaxListLimit, 50 by default),
// ?cursor= (the "next" of the previous page, which is absent after the
// last one) and ?status= (pending, running, completed, failed or
// cancelled: only the exports in that status). A page is read and then
// filtered by status, so it may hold fewer than limit exports, even none,
// while "next" says more follow.
//
// An id is a UUID; it is matched case-insensitively. An id that is not one
// answers 404 like an unknown one.
//
// A download is served with http.ServeContent, so Range, If-Range,
// If-None-Match, If-Modified-Since and HEAD work. Its ETag is the SHA-256
// of the bytes in hex (Job.Checksum), its Last-Modified the export's end,
// its Content-Type the metadata exporter.MetadataContentType
// ("content-type") or application/octet-stream, and its
// Content-Disposition an attachment named by the stored filename
// (RFC 6266, with filename* for any character), or "export-<id>".
//
// An event stream sends each snapshot of Exporter.WatchExport as an event
// "progress" whose data is the job, and the terminal one as "end", after
// which it ends. Each event's id is "<bytes>-<read>-<status>" (Job.Bytes,
// Job.Read), which only grows; a client that reconnects with Last-Event-ID
// is sent no state it already has, and gets 204 No Content if it already
// has the end. A comment line is sent every
// Config.Heartbeat. A stream ends when the export ends, the client leaves,
// or CloseStreams is called.
//
// # Errors
//
// Every error is an RFC 9457 problem document, Content-Type
// application/problem+json:
//
//	{"type": "https://github.com/exporterkit/exporter/exporterhttp#not_found",
//	 "title": "Export not found", "status": 404, "detail": "...", "code": "not_found"}
//
// code is stable; detail is for people, and quotes at most 64 bytes of
// anything the request sent. A 409 carries the export as the extension
// member "export". The codes:
//
//	400 bad_json                the body is not a JSON object of the members above
//	400 unknown_kind            kind is not one of Config.Kinds
//	400 invalid                 exporter.ErrInvalid (metadata beyond its limits), a bad limit, cursor, status or owner
//	401 unauthenticated         Config.Authenticate said so, or gave no user
//	403 forbidden               exporter.ErrForbidden: the user lacks the permission
//	403 cross_origin            a POST or DELETE from a page of another origin
//	404 not_found               an unknown, expired, malformed or another user's id; no such route
//	405 method_not_allowed      the route has other methods (see Allow)
//	409 finished                cancelling a completed or failed export
//	409 not_completed           downloading an export that has not completed
//	412 precondition_failed     a download's If-Match or If-Unmodified-Since failed
//	413 too_large               the body or args are too large; exporter.ErrTooLarge
//	415 unsupported_media_type  a POST body that is not application/json
//	416 range_not_satisfiable   a download's Range is outside the export
//	500 internal                anything else, logged and not described
//	501 unsupported             errors.ErrUnsupported: the store lacks exporter.AllLister or exporter.InstanceBoard
//	503 busy                    exporter.ErrBusy, with Retry-After
//	503 shutting_down           exporter.ErrClosed, or CloseStreams was called; with Retry-After
//
// A write is cross-origin when its Sec-Fetch-Site header is "cross-site",
// or its Origin header names another host and port than its Host.
//
// # Authentication and permissions
//
// Authentication is the service's: Config.Authenticate turns a request
// into an exporter.User, and the Exporter decides the rest. Starting an
// export needs the Exporter's Config.Permission ("exporter" by default);
// seeing, watching, cancelling and downloading one needs to be its owner
// or to hold Config.AdminPermission. To anyone else an export does not
// exist (404). The dashboard is for holders of Config.AdminPermission
// alone.
//
// # Dashboard
//
// With Config.Dashboard, the Handler serves an operator's dashboard at
// /dashboard (under the mount: "/exports/dashboard"). Every route of it
// is for holders of the Exporter's Config.AdminPermission alone: 401
// without a user, 403 "forbidden" for anyone else (and when
// AdminPermission is unset). The routes' errors are problem documents,
// but for the page itself, which answers a request that accepts text/html
// (a browser's navigation) with a small HTML page of the same status and
// code. Without Config.Dashboard its paths answer 404 like any unknown
// one.
//
// The page is a single page embedded in the package (HTML, a script and a
// style sheet, /dashboard/dashboard.js and /dashboard/dashboard.css),
// served with a Content-Security-Policy that lets it load nothing from,
// and send nothing to, another origin. It shows:
//
//   - every owner's exports, newest first, 50 a page with older pages
//     after "next": id, owner, kind, status, progress (Job.Read against
//     Job.Total when known, in KiB, MiB, GiB), creation time, attempt and
//     error code (the error's text on hover); filters by status and by
//     owner; a Cancel button for a pending or running export (DELETE
//     /{id}) and a download link for a completed one (GET /{id}/download),
//     which the admin permission allows on anyone's export;
//   - the figures of each running instance (Exporter.Instances): exports
//     running, pending and its Config.MaxRunning, throughput, runs
//     completed, failed and cancelled since it started, failures by
//     Job.ErrorCode, bytes stored; and their totals.
//
// It asks again every 2 seconds, the period of the instances' reports,
// and says when it last succeeded: when a request fails it keeps what it
// shows, dimmed, and says why and since when ("Lost contact (...);
// retrying every 2 s; last update at 10:42:07"), never passing stale data
// for live.
//
// GET /dashboard/exports takes limit, cursor and status as GET / does, and
// ?owner= (at most 256 bytes): one owner's exports, where no owner means
// every owner's (exporter.ListOptions.AllOwners). GET
// /dashboard/instances answers
//
//	{"instances": [instance...], "totals": {"instances": 2, "running": 3, "pending": 0,
//	 "max_running": 32, "throughput": 1048576, "bytes_stored": 52428800, "began": 40,
//	 "completed": 35, "failed": 2, "cancelled": 1, "failures": {"source": 2}}}
//
// where an instance is the JSON of exporter.Instance and the totals sum
// them (throughput in bytes per second).
//
// Listing every owner's exports scales with the store, not with the
// owners: RedisStore keeps a cross-owner index of 16 sorted sets, each
// export listed in the one its id hashes to. Creations spread evenly over
// the 16 keys, so no key (and on a Redis Cluster no slot) is hot however
// busy one owner is; a page reads the next entries of all 16 in one
// pipeline (a round trip per node, in parallel) and merges them newest
// first. A page filtered by status reads at most 2000 exports, so it
// costs a bounded read however rare the status; it may then come back
// short, or empty, with a "next" to go on from (the page says so).
//
// The Exporter has no call that only checks a permission: the page, its
// files, and a listing of the caller's own exports (which ListExports
// allows anyone) ask for Exporter.Instances, which only an admin may
// read, and drop the reports.
package exporterhttp
