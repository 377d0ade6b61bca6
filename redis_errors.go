package exporter

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// errGap marks a write whose chunks do not follow the stored ones: a bug or
// lost data, which repeating cannot fix.
var errGap = errors.New("chunks missing")

// Transient implements Store: a connection that failed, or the reply of a
// server that is loading its data, failing over or busy, may pass. A closed
// client, a gap and other error replies (NOPERM from an ACL, OOM, a
// script's error) are final.
func (s *RedisStore) Transient(err error) bool {
	if err == nil {
		return false
	}
	for _, final := range []error{errGap, redis.ErrClosed, ErrLeaseLost, ErrNotFound, ErrInvalid, ErrCorrupt,
		ErrFinished, ErrNotReplicated, context.Canceled, context.DeadlineExceeded} {
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
