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
// GET / takes ?limit= (1 to exporter.MaxListLimit, 50 by default) and
// ?cursor= (the "next" of the previous page, which is absent after the
// last one).
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
//	400 invalid                 exporter.ErrInvalid (metadata beyond its limits), a bad limit or cursor
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
// exist (404).
package exporterhttp
