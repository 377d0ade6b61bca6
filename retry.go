package exporter

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Writes are safe to repeat (see Store.Write), so the Exporter repeats a
// write that failed for a reason that may pass (a dropped connection, a
// restarting server) for as long as the run's lease can survive it: a
// short outage then delays an export instead of failing it.

// errGap marks a write whose chunks do not follow the stored ones: a bug or
// lost data, which repeating cannot fix.
var errGap = errors.New("chunks missing")

// transient reports whether err may pass if the call is repeated: a
// connection that failed, or the reply of a server that is loading its
// data, failing over or busy. The store's verdicts, a closed client and
// other error replies (NOPERM from an ACL, OOM, a script's error) are
// final.
func transient(err error) bool {
	if err == nil {
		return false
	}
	for _, final := range []error{ErrLeaseLost, ErrNotFound, ErrCorrupt, ErrNotReplicated, ErrInvalid,
		errGap, context.Canceled, context.DeadlineExceeded, redis.ErrClosed} {
		if errors.Is(err, final) {
			return false
		}
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		msg := reply.Error()
		for _, passing := range transientReplies {
			if strings.HasPrefix(msg, passing) {
				return true
			}
		}
		// Before Redis 7, an error inside a script came wrapped in ERR.
		return strings.Contains(msg, "-READONLY")
	}
	return true
}

// transientReplies are the prefixes of the Redis error replies that may
// pass: go-redis retries the same ones.
var transientReplies = []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN",
	"NOREPLICAS", "BUSY", "ERR max number of clients reached"}

// write is store.Write for the run rn, repeated with backoff while it
// fails transiently, for at most two thirds of the lease TTL (the lease was
// renewed by the last write that succeeded). The backoff doubles up to
// LeaseTTL/10 (at most a second), and the last wait is cut to end at the
// window's end, so the last attempt is made inside the window rather than
// given up because a full backoff would overshoot it.
func (e *Exporter) write(ctx context.Context, rn *run, w ChunkWrite) error {
	deadline := time.Now().Add(e.cfg.LeaseTTL * 2 / 3)
	backoff, most := 20*time.Millisecond, min(max(e.cfg.LeaseTTL/10, 20*time.Millisecond), time.Second)
	for {
		err := e.store.Write(ctx, rn.job.ID, rn.lease, w)
		if err == nil {
			e.countStored(ctx, w.Chunks)
			return nil
		}
		left := time.Until(deadline)
		if !transient(err) || left <= 0 {
			return err
		}
		wait := min(backoff, left)
		rn.log.DebugContext(ctx, "export write failed; repeating it", "err", err, "backoff", wait)
		if !sleepCtx(ctx, wait) {
			return err
		}
		backoff = min(2*backoff, most)
	}
}
