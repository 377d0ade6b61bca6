package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The security tests: every call as every kind of user, on every backend
// and in each job state that matters, allows exactly what the doc comments
// say and answers the rest with the documented sentinel; a refused call
// writes nothing; what a user sends (ids, metadata) or a reader returns
// (error texts) never names another key or a Redis command.

// secConfig: one run slot, so a second export waits as pending; an hour's
// lease, so no renewal changes a key while a test compares them.
var secConfig = Config{ChunkSize: testChunk, MaxRunning: 1, LeaseTTL: time.Hour, AdminPermission: "exporter-admin"}

// secUsers are the kinds of caller, alice being the owner of every job.
var secUsers = []struct {
	kind string
	user User
}{
	{"owner", alice},
	{"other", bob},
	{"admin", admin},
	{"anonymous", anon},
	{"no permission", nobody},
}

// secJobs are alice's jobs in the states that matter, on one Exporter.
type secJobs struct {
	x    *Exporter
	jobs map[Status]*Job
	srcs map[Status]*feedSource // of the running and pending jobs
	data []byte                 // the completed export's bytes
}

// secSetup starts alice's jobs in the given states: a completed one, a
// running one that has stored two chunks and waits for more, and a pending
// one that waits behind it for the single run slot (which needs the running
// one, so asking for pending starts both).
func secSetup(t *testing.T, e *env, states ...Status) *secJobs {
	t.Helper()
	ctx := testCtx(t)
	f := &secJobs{x: e.exporter(t, secConfig), jobs: map[Status]*Job{}, srcs: map[Status]*feedSource{}}
	if slices.Contains(states, StatusCompleted) {
		f.data = randomBytes(3*testChunk + 7)
		job, err := f.x.StartExport(ctx, alice, bytes.NewReader(f.data),
			WithMetadata(map[string]string{"filename": "orders.csv"}))
		require.NoError(t, err)
		f.jobs[StatusCompleted] = waitFor(t, f.x, alice, job.ID, StatusCompleted)
	}
	if slices.Contains(states, StatusRunning) || slices.Contains(states, StatusPending) {
		src := newFeedSource(randomBytes(2 * testChunk))
		// Registered after the Exporter's Shutdown, so it runs before it:
		// the run fails at once instead of keeping Shutdown waiting.
		t.Cleanup(func() { src.Close() })
		job, err := f.x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			job, err = f.x.GetExportStatus(ctx, alice, job.ID)
			require.NoError(t, err)
			return job.Status == StatusRunning && job.Bytes == 2*testChunk
		}, 10*time.Second, time.Millisecond, "the running job did not store its two chunks")
		f.jobs[StatusRunning], f.srcs[StatusRunning] = job, src
	}
	if slices.Contains(states, StatusPending) {
		src := newFeedSource(nil)
		t.Cleanup(func() { src.Close() })
		job, err := f.x.StartExport(ctx, alice, src)
		require.NoError(t, err)
		require.Equal(t, StatusPending, job.Status)
		f.jobs[StatusPending], f.srcs[StatusPending] = job, src
	}
	return f
}

// secSnapshot returns every key under the env's prefix with its type and
// value (TTLs left out: they tick down), to compare before and after a call.
func secSnapshot(t *testing.T, e *env) map[string]string {
	t.Helper()
	ctx := testCtx(t)
	out := map[string]string{}
	for _, k := range e.keys(t) {
		if k == e.store.instancesKey() {
			continue // the running instance's report, renewed as time passes
		}
		typ, err := e.client.Type(ctx, k).Result()
		require.NoError(t, err)
		var v string
		switch typ {
		case "none":
			continue // expired since KEYS
		case "string":
			s, err := e.client.Get(ctx, k).Result()
			require.NoError(t, err)
			v = fmt.Sprintf("%q", s)
		case "hash":
			h, err := e.client.HGetAll(ctx, k).Result()
			require.NoError(t, err)
			v = fmt.Sprintf("%q", h) // fmt sorts map keys
		case "list":
			l, err := e.client.LRange(ctx, k, 0, -1).Result()
			require.NoError(t, err)
			v = secDigest(l)
		case "zset":
			z, err := e.client.ZRangeWithScores(ctx, k, 0, -1).Result()
			require.NoError(t, err)
			v = fmt.Sprint(z)
		case "set":
			s, err := e.client.SMembers(ctx, k).Result()
			require.NoError(t, err)
			slices.Sort(s)
			v = fmt.Sprintf("%q", s)
		default:
			t.Fatalf("key %s has a type the library never writes: %s", k, typ)
		}
		out[k] = typ + " " + v
	}
	return out
}

// secDigest stands for a list of chunks: their lengths and a hash of their
// bytes, so that a failure prints a short diff.
func secDigest(l []string) string {
	h := sha256.New()
	lens := make([]int, len(l))
	for i, s := range l {
		lens[i] = len(s)
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return fmt.Sprintf("%v %s", lens, hex.EncodeToString(h.Sum(nil))[:16])
}

// secRequireOthersUnchanged fails if a key of a job other than id (a key
// whose name holds that job's id) changed, appeared or vanished between the
// snapshots.
func secRequireOthersUnchanged(t *testing.T, before, after map[string]string, others []string, id string) {
	t.Helper()
	of := func(snap map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range snap {
			for _, o := range others {
				if o != id && strings.Contains(k, o) {
					out[k] = v
				}
			}
		}
		return out
	}
	require.Equal(t, of(before), of(after), "a call on %s changed another job's keys", id)
}

// secCall is one library call made as user on job id (StartExport ignores
// id). It returns the job the call returned, if any.
type secCall struct {
	name string
	do   func(t *testing.T, f *secJobs, u User, id string) (*Job, error)
}

var secCalls = []secCall{
	{"start", func(t *testing.T, f *secJobs, u User, _ string) (*Job, error) {
		return f.x.StartExport(testCtx(t), u, strings.NewReader("a new export"))
	}},
	{"status", func(t *testing.T, f *secJobs, u User, id string) (*Job, error) {
		return f.x.GetExportStatus(testCtx(t), u, id)
	}},
	{"wait", func(t *testing.T, f *secJobs, u User, id string) (*Job, error) {
		ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
		defer cancel()
		return f.x.WaitExport(ctx, u, id)
	}},
	{"cancel", func(t *testing.T, f *secJobs, u User, id string) (*Job, error) {
		return f.x.CancelExport(testCtx(t), u, id)
	}},
	{"open", func(t *testing.T, f *secJobs, u User, id string) (*Job, error) {
		d, err := f.x.OpenExport(testCtx(t), u, id)
		if err != nil {
			require.Nil(t, d)
			return nil, err
		}
		defer d.Close()
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, f.data, got)
		return d.Job(), nil
	}},
	{"list", func(t *testing.T, f *secJobs, u User, id string) (*Job, error) {
		list, err := f.x.ListExports(testCtx(t), u, ListOptions{Owner: alice.ID, Limit: MaxListLimit})
		if err != nil {
			require.Nil(t, list)
			return nil, err
		}
		for _, j := range list.Jobs {
			require.Equal(t, alice.ID, j.Owner)
			if j.ID == id {
				return j, nil
			}
		}
		return nil, fmt.Errorf("job %s is not listed", id)
	}},
}

// secWant is the documented answer to a call.
type secWant struct {
	err    error  // nil: the call succeeds
	status Status // the status of the job returned, when one is
	writes bool   // the call changes the store: a start, a cancel of a live job
}

// secExpect is the table of what each kind of user may do, as the doc
// comments and the README's error table state it.
func secExpect(call, kind string, state Status) secWant {
	if kind == "anonymous" {
		return secWant{err: ErrUnauthenticated}
	}
	switch call {
	case "start":
		if kind == "owner" || kind == "other" { // both hold "exporter"
			return secWant{status: StatusPending, writes: true} // behind the one run slot
		}
		return secWant{err: ErrForbidden} // the admin holds only "exporter-admin"
	case "list":
		if kind == "owner" || kind == "admin" {
			return secWant{status: state}
		}
		return secWant{err: ErrForbidden}
	}
	if kind != "owner" && kind != "admin" {
		return secWant{err: ErrNotFound}
	}
	live := state == StatusPending || state == StatusRunning
	switch call {
	case "wait":
		if live {
			return secWant{err: context.DeadlineExceeded}
		}
	case "cancel":
		if live {
			return secWant{status: StatusCancelled, writes: true}
		}
		return secWant{err: ErrFinished, status: state}
	case "open":
		if live {
			return secWant{err: ErrNotReady}
		}
	}
	return secWant{status: state}
}

// TestSecurityAccess runs every call as every kind of user against alice's
// pending, running and completed jobs, on every backend. Only the allowed
// cells succeed; the others return the documented sentinel, no job, and an
// error that does not tell another user's job from an unknown id; and a
// call that is not a start or a cancel of a live job changes no key, value
// or type under the prefix.
func TestSecurityAccess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		f := secSetup(t, e, StatusPending, StatusRunning, StatusCompleted)
		var all []string
		for _, j := range f.jobs {
			all = append(all, j.ID)
		}
		unknown := "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59"
		for _, state := range []Status{StatusPending, StatusRunning, StatusCompleted} {
			for _, call := range secCalls {
				for _, u := range secUsers {
					want := secExpect(call.name, u.kind, state)
					t.Run(fmt.Sprintf("%s/%s/%s", state, call.name, u.kind), func(t *testing.T) {
						if want.writes && call.name == "cancel" {
							// Cancelling changes the fixture: a fresh one.
							secCancelLive(t, newEnv(t, e.name), u.user, state)
							return
						}
						id := f.jobs[state].ID
						before := secSnapshot(t, e)
						job, err := call.do(t, f, u.user, id)
						after := secSnapshot(t, e)
						secCheck(t, want, job, err)
						if want.writes { // a start
							require.NotEqual(t, id, job.ID)
							require.Equal(t, u.user.ID, job.Owner)
							secRequireOthersUnchanged(t, before, after, all, job.ID)
							all = append(all, job.ID)
							return
						}
						require.Equal(t, before, after, "the call changed the store")
						if errors.Is(want.err, ErrNotFound) {
							// The same answer as for an id nobody has.
							_, errUnknown := call.do(t, f, u.user, unknown)
							require.ErrorIs(t, errUnknown, ErrNotFound)
							require.Equal(t, strings.ReplaceAll(errUnknown.Error(), unknown, "ID"),
								strings.ReplaceAll(err.Error(), id, "ID"), "the error tells the cases apart")
						}
						if want.err == nil && call.name != "start" {
							require.Equal(t, id, job.ID)
							require.Equal(t, alice.ID, job.Owner)
						}
					})
				}
			}
		}
	})
}

// secCheck compares a call's answer with want.
func secCheck(t *testing.T, want secWant, job *Job, err error) {
	t.Helper()
	if want.err != nil {
		require.ErrorIs(t, err, want.err)
		if want.status == "" {
			require.Nil(t, job, "a refused call returned a job")
			return
		}
	} else {
		require.NoError(t, err)
	}
	require.NotNil(t, job)
	require.Equal(t, want.status, job.Status)
}

// secCancelLive cancels alice's job in state (pending or running) as u, who
// may do so, on a fixture of its own: the job is cancelled, its source
// closed, its data gone, and no other job's key changed.
func secCancelLive(t *testing.T, e *env, u User, state Status) {
	t.Helper()
	ctx := testCtx(t)
	f := secSetup(t, e, StatusCompleted, state)
	var others []string
	for _, j := range f.jobs {
		others = append(others, j.ID)
	}
	id := f.jobs[state].ID
	before := secSnapshot(t, e)
	job, err := f.x.CancelExport(ctx, u, id)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, job.Status)
	f.srcs[state].requireClosedOnce(t)
	after := secSnapshot(t, e)
	secRequireOthersUnchanged(t, before, after, others, id)
	job, err = f.x.GetExportStatus(ctx, alice, id)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, job.Status)
	chunks, err := e.store.ReadChunks(ctx, id, 0, 100)
	require.NoError(t, err)
	require.Empty(t, chunks, "a cancelled export's data is removed")
}

// secRecorder is a go-redis hook that records the commands sent while it
// is on.
type secRecorder struct {
	mu   sync.Mutex
	on   bool
	cmds []string
}

func (r *secRecorder) record(cmds ...redis.Cmder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		for _, c := range cmds {
			r.cmds = append(r.cmds, fmt.Sprint(c.Args()...))
		}
	}
}

// during records the commands sent while f runs.
func (r *secRecorder) during(f func()) []string {
	r.mu.Lock()
	r.on, r.cmds = true, nil
	r.mu.Unlock()
	f()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.cmds
}

func (r *secRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *secRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd)
		return next(ctx, cmd)
	}
}

func (r *secRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.record(cmds...)
		return next(ctx, cmds)
	}
}

// TestSecurityHostileIDs: ids that try to name other keys, hash tags or
// commands, or that wrap a real id, are ErrNotFound for the owner and the
// admin alike, without a single command reaching Redis and with no key
// changed.
func TestSecurityHostileIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		rec := &secRecorder{}
		e.client.AddHook(rec)
		f := secSetup(t, e, StatusRunning, StatusCompleted)
		real := f.jobs[StatusCompleted].ID
		ids := []string{
			"", "*", "a}:meta", "{x}", "../", "..", "/", "\r\nFLUSHALL\r\n",
			"*3\r\n$3\r\nDEL\r\n", "events", "owner", "\x00",
			"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59\x00",
			"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a5*",
			"9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a}{",
			real + "\x00", real + "}:data", "{" + real + "}", real[:35] + "}",
			strings.ToUpper(real), " " + real, real + "\n", e.prefix + "{" + real + "}:meta",
		}
		// Every call that takes an id; ListExports takes none.
		calls := slices.DeleteFunc(slices.Clone(secCalls), func(c secCall) bool {
			return c.name == "start" || c.name == "list"
		})
		// The recorder sees the commands of a call that reaches Redis.
		sent := rec.during(func() {
			_, err := f.x.GetExportStatus(testCtx(t), alice, real)
			require.NoError(t, err)
		})
		require.NotEmpty(t, sent, "the hook records nothing")
		before := secSnapshot(t, e)
		for _, id := range ids {
			for _, call := range calls {
				for _, u := range []User{alice, admin} {
					var (
						job *Job
						err error
					)
					sent := rec.during(func() { job, err = call.do(t, f, u, id) })
					require.ErrorIs(t, err, ErrNotFound, "%s %q as %s", call.name, id, u.ID)
					require.Nil(t, job)
					require.Empty(t, sent, "%s %q as %s sent commands", call.name, id, u.ID)
				}
			}
		}
		require.Equal(t, before, secSnapshot(t, e), "a hostile id changed the store")
	})
}

// TestSecurityHostileOwners: user ids are data, whatever their bytes: a
// job started by a user named like a pattern, a hash tag or a command is
// that user's alone.
func TestSecurityHostileOwners(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		x := e.exporter(t, Config{ChunkSize: testChunk, AdminPermission: "exporter-admin"})
		ctx := testCtx(t)
		names := []string{"*", "{alice}", "alice}", "alice\x00", "\r\nFLUSHALL\r\n", "alice ", "' or '1'='1"}
		jobs := map[string]*Job{}
		for _, name := range names {
			u := User{ID: name, Permissions: []string{"exporter"}}
			job, err := x.StartExport(ctx, u, strings.NewReader("export of "+name))
			require.NoError(t, err)
			require.Equal(t, name, job.Owner)
			jobs[name] = waitFor(t, x, u, job.ID, StatusCompleted)
		}
		for _, name := range names {
			for _, other := range append(names, alice.ID) {
				if other == name {
					continue
				}
				_, err := x.GetExportStatus(ctx, User{ID: other}, jobs[name].ID)
				require.ErrorIs(t, err, ErrNotFound, "%q sees %q's job", other, name)
				_, err = x.CancelExport(ctx, User{ID: other}, jobs[name].ID)
				require.ErrorIs(t, err, ErrNotFound, "%q cancels %q's job", other, name)
			}
			list, err := x.ListExports(ctx, User{ID: name}, ListOptions{})
			require.NoError(t, err)
			require.Len(t, list.Jobs, 1, "%q lists other users' jobs", name)
			require.Equal(t, jobs[name].ID, list.Jobs[0].ID)
			job, err := x.GetExportStatus(ctx, admin, jobs[name].ID)
			require.NoError(t, err)
			require.Equal(t, name, job.Owner)
		}
		e.requireTTLs(t)
	})
}

// TestSecurityMetadata: metadata beyond its limits is ErrInvalid and
// nothing is written; metadata within them is stored verbatim, whatever it
// looks like, and cannot override the job's own fields.
func TestSecurityMetadata(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		f := secSetup(t, e, StatusCompleted)
		ctx := testCtx(t)
		many := map[string]string{}
		for i := range MaxMetadataEntries + 1 {
			many[fmt.Sprint("k", i)] = "v"
		}
		refused := []struct {
			name string
			md   map[string]string
		}{
			{"too many entries", many},
			{"empty key", map[string]string{"": "v"}},
			{"long key", map[string]string{strings.Repeat("k", MaxMetadataKey+1): "v"}},
			{"long value", map[string]string{"k": strings.Repeat("v", MaxMetadataValue+1)}},
			{"key not UTF-8", map[string]string{"\xff": "v"}},
			{"value not UTF-8", map[string]string{"k": "\xc3"}},
		}
		for _, tt := range refused {
			t.Run(tt.name, func(t *testing.T) {
				before := secSnapshot(t, e)
				src := newFeedSource(nil)
				job, err := f.x.StartExport(ctx, alice, src, WithMetadata(tt.md))
				require.ErrorIs(t, err, ErrInvalid)
				require.Nil(t, job)
				require.Equal(t, int32(1), src.closed.Load(), "a refused source is closed")
				require.Equal(t, before, secSnapshot(t, e), "a refused start wrote")
			})
		}

		// Within the limits: names of the job's own fields, Redis protocol,
		// Lua, JSON and glob characters are plain data.
		md := map[string]string{
			"owner":                   "bob",
			"status":                  "completed",
			"id":                      f.jobs[StatusCompleted].ID,
			"md":                      `{"owner":"bob"}`,
			"\r\nFLUSHALL\r\n":        "*1\r\n$8\r\nFLUSHALL\r\n",
			"lua":                     `')) redis.call('FLUSHALL') --`,
			"}:meta":                  "{x}*?[a]\\",
			strings.Repeat("k", 128):  strings.Repeat("é", MaxMetadataValue/2),
			"\x00":                    "\x00",
			"emoji \U0001F600 é ß 中文": "ok",
		}
		job, err := f.x.StartExport(ctx, alice, strings.NewReader("x"), WithMetadata(md))
		require.NoError(t, err)
		job = waitFor(t, f.x, alice, job.ID, StatusCompleted)
		require.Equal(t, md, job.Metadata)
		require.Equal(t, alice.ID, job.Owner)
		_, err = f.x.GetExportStatus(ctx, bob, job.ID)
		require.ErrorIs(t, err, ErrNotFound, "metadata made bob the owner")
		again, err := f.x.GetExportStatus(ctx, alice, f.jobs[StatusCompleted].ID)
		require.NoError(t, err)
		require.Equal(t, f.jobs[StatusCompleted], again, "metadata naming another job changed it")
		e.requireTTLs(t)
	})
}

// secErrReader serves data, then fails with a given error.
type secErrReader struct {
	data []byte
	err  error
}

func (r *secErrReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestSecurityReaderErrorText: a reader's error text that looks like the
// Redis protocol, Lua, or the events' own encoding is stored verbatim as
// Job.Error, seen alike through every call and instance, and changes no
// other job.
func TestSecurityReaderErrorText(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		f := secSetup(t, e, StatusRunning, StatusCompleted)
		ctx := testCtx(t)
		text := "boom\r\n*1\r\n$8\r\nFLUSHALL\r\n" +
			`'); redis.call('FLUSHALL'); --` + "]] .. redis.call('DEL', KEYS[1]) .. [[" +
			" 6:status 9:completed 2:id 3:xyz " + f.jobs[StatusCompleted].ID + " completed" +
			"\x00\xff\n{" + f.jobs[StatusRunning].ID + "}:meta %s %d"
		// A second Exporter runs the failing export, so the running job's
		// run slot on the first does not hold it up.
		second := e.secondExporter(t, secConfig)
		var others []string
		for _, j := range f.jobs {
			others = append(others, j.ID)
		}
		before := secSnapshot(t, e)
		job, err := second.StartExport(ctx, alice, &secErrReader{data: randomBytes(testChunk + 10), err: errors.New(text)})
		require.NoError(t, err)
		for _, x := range []*Exporter{second, f.x} {
			got, err := x.WaitExport(ctx, alice, job.ID) // may come from the event
			require.NoError(t, err)
			require.Equal(t, StatusFailed, got.Status)
			require.Equal(t, text, got.Error)
			got, err = x.GetExportStatus(ctx, admin, job.ID)
			require.NoError(t, err)
			require.Equal(t, StatusFailed, got.Status)
			require.Equal(t, text, got.Error)
			require.EqualError(t, got.Err(), text)
		}
		after := secSnapshot(t, e)
		secRequireOthersUnchanged(t, before, after, append(others, job.ID), job.ID)
		chunks, err := e.store.ReadChunks(ctx, job.ID, 0, 100)
		require.NoError(t, err)
		require.Empty(t, chunks, "a failed export's data is removed")
		// The other jobs still work.
		d, err := f.x.OpenExport(ctx, alice, f.jobs[StatusCompleted].ID)
		require.NoError(t, err)
		defer d.Close()
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		require.Equal(t, f.data, got)
		e.requireTTLs(t)
	})
}
