package exporter

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Events on Redis: one pub/sub channel, <prefix>events, carries the end of
// every job (published by the script that records it, with the job) and
// the progress of watched jobs (after each store write, while the job's
// :watch key exists).

// eventsChannel is where the scripts announce terminal statuses, as
// "<id> <status> <job>", and progress, as "<id> running" (see parseEvent).
func (s *RedisStore) eventsChannel() string { return s.prefix + "events" }

// Watch implements Store.
func (s *RedisStore) Watch(ctx context.Context, id string, ttl time.Duration) error {
	return s.client.Set(ctx, s.keys(id)[3], "1", ttl).Err()
}

// Subscribe implements Store.
func (s *RedisStore) Subscribe(ctx context.Context) (Subscription, error) {
	ps := s.client.Subscribe(ctx, s.eventsChannel())
	// Wait for the confirmation, so that an event after Subscribe returns
	// is never missed.
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, err
	}
	return &redisSubscription{ps: ps, idle: s.idle}, nil
}

type redisSubscription struct {
	ps   *redis.PubSub
	idle *idleShards // told of the shards where exports were queued
}

func (r *redisSubscription) Receive(ctx context.Context, timeout time.Duration) (Event, error) {
	// Close the subscription if ctx ends while we wait, so that a caller
	// whose ctx has no deadline is not kept waiting.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { r.ps.Close(); close(closed) })
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	deadline := time.Time{}
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		wait := time.Duration(0)
		if !deadline.IsZero() {
			if wait = time.Until(deadline); wait <= 0 {
				return Event{}, nil
			}
		}
		msg, err := r.ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return Event{}, ctx.Err()
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return Event{}, nil
		}
		if err != nil {
			return Event{}, err
		}
		if m, ok := msg.(*redis.Message); ok {
			if ev, ok := parseEvent(m.Payload); ok {
				if ev.Kind != "" {
					// "<kind> <shard>": the shard may be claimed from again.
					kind, n, _ := strings.Cut(ev.Kind, " ")
					shard, err := strconv.Atoi(n)
					if err == nil && r.idle != nil {
						r.idle.ready(shard)
					}
					ev.Kind = kind
				}
				return ev, nil
			}
		}
		// Subscription confirmations, pongs, malformed payloads: keep waiting.
	}
}

func (r *redisSubscription) Close() error { return r.ps.Close() }

// parseEvent reads "<id> <status> <job>", where <job> is the job hash's
// strings, each as <length>:<bytes>. A job that does not decode is left
// out: the event still wakes its waiters, who then read the store.
func parseEvent(payload string) (Event, bool) {
	id, rest, _ := strings.Cut(payload, " ")
	st, packed, _ := strings.Cut(rest, " ")
	ev := Event{ID: id, Status: Status(st)}
	if !validID(id) || !ev.Status.valid() {
		return Event{}, false
	}
	if !ev.Status.Terminal() {
		if ev.Status == StatusPending {
			ev.Kind = packed // a durable export is ready: "<id> pending <kind>"
		}
		return ev, true // progress of a watched job: no job attached
	}
	h := make(map[string]string, 16)
	var key string
	for i := 0; packed != ""; i++ {
		n, tail, ok := strings.Cut(packed, ":")
		size, err := strconv.Atoi(n)
		if !ok || err != nil || size < 0 || size > len(tail) {
			return ev, true
		}
		if i%2 == 0 {
			key = tail[:size]
		} else {
			h[key] = tail[:size]
		}
		packed = tail[size:]
	}
	if j, err := decodeJob(h); err == nil && j.ID == id && j.Status == ev.Status {
		ev.Job = j
	}
	return ev, true
}
