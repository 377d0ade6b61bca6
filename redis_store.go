package exporter

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// RedisStore is the Store on Redis: a standalone server, Sentinel-managed
// servers (redis.NewFailoverClient) or a Redis Cluster. Create one with
// NewRedisStore. It is safe for concurrent use.
//
// Each job lives in keys that share the hash tag {id}, so every script
// touches one Cluster slot:
//
//	<prefix>{<id>}:meta   hash: the job (see the field names in job.go)
//	<prefix>{<id>}:data   list: the chunks, in order
//	<prefix>{<id>}:lease  string: the running instance's token, with PX = lease TTL
//	<prefix>{<id>}:watch  string: present (with a TTL) while WatchExport runs on the job
//	<prefix>{<id>}:abandoned  string: present for 10 minutes once a creation whose
//	                      caller was told it failed was undone (see Abandon)
//
// Every state change is one Lua script that checks the status and the
// lease token before it writes and sets the TTLs in the same step. A job
// reaching a terminal status is announced on the channel <prefix>events
// as "<id> <status> <job>", in the same script (see parseEvent). Each
// owner's jobs are listed in <prefix>owner:{<hash of owner>}:jobs, a
// sorted set with a TTL (see redis_list.go). A chunk write is a MULTI/EXEC
// (see redis_write.go) and lease renewals are pipelined (redis_lease.go).
//
// RedisStore never closes the client it was given.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
	err    error       // from WithPrefix, reported by New
	idle   *idleShards // queue shards found empty lately (redis_queue.go)
	// placement is where the cross-owner index's shards live on a
	// Cluster (redis_list_all.go).
	placement *allPlacement
}

var (
	_ Store = (*RedisStore)(nil)
	_ Queue = (*RedisStore)(nil)
)

// DefaultPrefix is the key and channel prefix of NewRedisStore.
const DefaultPrefix = "exporter:"

// NewRedisStore returns a Store that keeps jobs in client under
// DefaultPrefix. client may be a *redis.Client, a failover client or a
// *redis.ClusterClient. For calls to return by their ctx deadline, create
// the client with ContextTimeoutEnabled: true (see the package doc).
func NewRedisStore(client redis.UniversalClient) *RedisStore {
	return &RedisStore{client: client, prefix: DefaultPrefix, idle: &idleShards{}, placement: &allPlacement{}}
}

// WithPrefix returns a copy of s that uses prefix for its keys and
// channels, so several services (or tests) can share one Redis. The prefix
// must not contain '{' or '}', which would break the per-job hash tag; an
// invalid prefix is reported by New.
func (s *RedisStore) WithPrefix(prefix string) *RedisStore {
	c := *s
	c.prefix = prefix
	c.idle = &idleShards{}        // another queue
	c.placement = &allPlacement{} // other keys
	if strings.ContainsAny(prefix, "{}") {
		c.err = fmt.Errorf("%w: RedisStore prefix %q contains '{' or '}'", ErrInvalid, prefix)
	}
	return &c
}

// validate is called by New: a nil client or a bad prefix is a
// configuration error, not a later panic.
func (s *RedisStore) validate() error {
	if s.client == nil {
		return fmt.Errorf("%w: NewRedisStore was given a nil client", ErrInvalid)
	}
	return s.err
}

// keys returns the job's keys in the order the scripts expect them.
func (s *RedisStore) keys(id string) []string {
	tag := s.prefix + "{" + id + "}:"
	return []string{tag + "meta", tag + "data", tag + "lease", tag + "watch", tag + "abandoned"}
}

// runJobScript executes script on the job's keys and splits its reply into the
// code and the job, if the reply carries one.
func (s *RedisStore) runJobScript(ctx context.Context, script *redis.Script, id string, args ...any) (string, *Job, error) {
	argv := make([]any, 0, len(args)+1)
	argv = append(argv, s.eventsChannel())
	argv = append(argv, args...)
	res, err := script.Run(ctx, s.client, s.keys(id), argv...).Slice()
	if err != nil {
		return "", nil, err
	}
	return s.parse(id, res)
}

// parse splits a script's reply into its code and the job, if it carries one.
func (s *RedisStore) parse(id string, res []any) (string, *Job, error) {
	if len(res) == 0 || len(res)%2 == 0 {
		return "", nil, fmt.Errorf("%w: unexpected script reply of %d elements", ErrCorrupt, len(res))
	}
	code, _ := res[0].(string)
	if code == "missing" {
		return code, nil, ErrNotFound
	}
	if len(res) == 1 {
		return code, nil, nil
	}
	h := make(map[string]string, len(res)/2)
	for i := 1; i+1 < len(res); i += 2 {
		k, _ := res[i].(string)
		v, _ := res[i+1].(string)
		h[k] = v
	}
	j, err := decodeJob(h)
	return code, j, err
}

// Create implements Store.
func (s *RedisStore) Create(ctx context.Context, job *Job, lease Lease, retention time.Duration) (*Job, error) {
	fields, err := encodeJob(job, retention)
	if err != nil {
		return nil, err
	}
	fields = append(fields, fLease, lease.TTL.Milliseconds())
	args := append([]any{s.eventsChannel(), lease.Token, lease.TTL.Milliseconds(), retention.Milliseconds()}, fields...)
	// The owner's index lives in another Cluster slot than the job, so it
	// cannot be written by the same script: it is written first, in the
	// same round trip (see redis_list.go).
	var ix indexWrite
	res, err := s.pipelined(ctx, scriptCreate, s.keys(job.ID), args, func(pipe redis.Pipeliner) {
		ix = s.indexJobs(ctx, pipe, job, retention)
	}, nil)
	if err != nil {
		return nil, err
	}
	ix.prune(ctx, s)
	return created("create", job, res, retention)
}

// created reads the reply of a creation script ({"ok", created ms}) of
// op and returns job as stored: the hash holds exactly job and these
// times, so there is no need to read it back.
func created(op string, job *Job, res []any, retention time.Duration) (*Job, error) {
	if len(res) != 2 || res[0] != "ok" {
		return nil, fmt.Errorf("%s %s: %v", op, job.ID, res[0])
	}
	ms, err := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: time %v", ErrCorrupt, op, job.ID, res[1])
	}
	j := job.clone()
	j.CreatedAt = time.UnixMilli(ms).UTC()
	j.UpdatedAt, j.ExpiresAt = j.CreatedAt, j.CreatedAt.Add(retention.Truncate(time.Millisecond))
	return j, nil
}

// Get implements Store. A status read is one round trip, with no script
// (which costs Redis several times more): the job hash and whether its
// lease exists. Only a live job whose lease is gone costs scriptGet,
// which checks again and ends the job. No clock is compared: the lease
// key's own expiry, kept by Redis, decides.
func (s *RedisStore) Get(ctx context.Context, id, owner string) (*Job, error) {
	k := s.keys(id)
	pipe := s.client.Pipeline()
	hash := pipe.HGetAll(ctx, k[0])
	held := pipe.Exists(ctx, k[2])
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	h := hash.Val()
	if len(h) == 0 || owner != "" && h[fOwner] != owner {
		return nil, ErrNotFound
	}
	j, err := decodeJob(h)
	if err != nil {
		return nil, err
	}
	if lapsed(j, held.Val()) {
		_, j, err = s.runJobScript(ctx, scriptGet, id, owner)
	}
	return j, err
}

// lapsed reports whether j is live while its lease key is gone (exists is
// what EXISTS said of it).
func lapsed(j *Job, exists int64) bool {
	// A durable export between attempts holds no lease and stays live.
	return (j.Status == StatusPending || j.Status == StatusRunning) && exists == 0 && j.Kind == ""
}

// pipelined runs script after the commands that before adds and before
// those that after adds (nil: none), in one pipeline on one connection
// (per Cluster node), and returns the script's reply. The script is run by
// hash; if the server does not have it (a new or restarted server), it is
// loaded and the whole pipeline runs again, so the commands around it must
// be safe to repeat.
func (s *RedisStore) pipelined(ctx context.Context, script *redis.Script, keys []string, argv []any, before, after func(redis.Pipeliner)) ([]any, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.client.Pipeline()
		before(pipe)
		cmd := pipe.EvalSha(ctx, script.Hash(), keys, argv...)
		if after != nil {
			after(pipe)
		}
		_, err := pipe.Exec(ctx)
		if attempt == 0 && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			if err := script.Load(ctx, s.client).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		res, err := cmd.Slice()
		if err == nil && len(res) == 0 {
			err = fmt.Errorf("%w: empty script reply", ErrCorrupt)
		}
		return res, err
	}
}

// abandonedTTL is how long an abandoned creation's mark lasts: longer
// than any copy of it can take to arrive.
const abandonedTTL = 10 * time.Minute

// Abandon implements Store.
func (s *RedisStore) Abandon(ctx context.Context, id string, lease Lease) error {
	_, _, err := s.runJobScript(ctx, scriptAbandon, id, lease.Token, abandonedTTL.Milliseconds())
	return err
}

// Cancel implements Store.
func (s *RedisStore) Cancel(ctx context.Context, id, owner, reason string) (*Job, error) {
	code, j, err := s.runJobScript(ctx, scriptCancel, id, owner, reason)
	if err == nil && code == "finished" {
		err = ErrFinished
	}
	return j, err
}

// ReadChunks implements Store. The returned slices alias the reply's
// strings without a copy; the Exporter only reads them.
func (s *RedisStore) ReadChunks(ctx context.Context, id string, first, n int) ([][]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	k := s.keys(id)
	vals, err := s.client.LRange(ctx, k[1], int64(first), int64(first+n-1)).Result()
	if err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		// An empty range is either a job without those chunks or a job that
		// expired; tell them apart so callers can report ErrNotFound.
		ok, err := s.client.Exists(ctx, k[0]).Result()
		if err != nil {
			return nil, err
		}
		if ok == 0 {
			return nil, ErrNotFound
		}
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = unsafe.Slice(unsafe.StringData(v), len(v))
	}
	return out, nil
}

// evictionPolicies returns the maxmemory-policy of every server that holds
// jobs: each master of a Cluster, else the one server.
func (s *RedisStore) evictionPolicies(ctx context.Context) ([]string, error) {
	read := func(ctx context.Context, c redis.Cmdable) (string, error) {
		m, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		return m["maxmemory-policy"], err
	}
	cc, ok := s.client.(*redis.ClusterClient)
	if !ok {
		p, err := read(ctx, s.client)
		return []string{p}, err
	}
	var (
		mu  sync.Mutex
		out []string
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		p, err := read(ctx, c)
		mu.Lock()
		out = append(out, p)
		mu.Unlock()
		return err
	})
	return out, err
}
