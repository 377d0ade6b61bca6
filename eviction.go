package exporter

import (
	"context"
)

// Eviction. Every key of a job has a TTL, so a Redis whose maxmemory-policy
// is a volatile-* one may evict any of them, as may an allkeys-* one: a
// running export then fails as "worker lost" or disappears, and a
// completed one whose chunks were evicted still reads completed but fails
// to download (ErrCorrupt, "evicted or deleted"). Only noeviction keeps
// the promises: above maxmemory, Redis then refuses new exports and new
// bytes, and every ending is still recorded. As Sidekiq and BullMQ do, an
// Exporter reads the policy once, when its background work starts, and
// warns if it is another; a server that refuses CONFIG GET (managed
// services, an ACL without +config|get) is not warned about.

// evictionReporter is implemented by stores that can tell how their
// servers evict keys (RedisStore).
type evictionReporter interface {
	evictionPolicies(ctx context.Context) ([]string, error)
}

// checkEviction logs a warning, once, if a server of the store may evict
// keys. It is one of the Exporter's background goroutines.
func (e *Exporter) checkEviction() {
	r, ok := e.store.(evictionReporter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
	defer cancel()
	policies, err := r.evictionPolicies(ctx)
	if err != nil {
		e.log.Debug("could not read Redis maxmemory-policy; not checked", "err", err)
		return
	}
	for _, p := range policies {
		if p != "noeviction" {
			e.log.Warn("Redis may evict the keys of exports: set maxmemory-policy to noeviction (see the README)",
				"maxmemory-policy", p)
			return
		}
	}
}
