package exporter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// aclCommands are the commands a RedisStore sends, directly or from its Lua
// scripts (Redis checks a script's redis.call against the caller's ACL too,
// commands and keys alike). docs/security.md shows the same list.
var aclCommands = []string{
	// Sent by RedisStore: scripts by hash, by body when the server lacks
	// them (script.Run, the owner's index) or loaded first (the writes);
	// chunk appends, in a transaction with their script; status and
	// download reads; the owner's index of jobs (ListExports); the events
	// subscription. go-redis sends no PING or UNSUBSCRIBE for it: the
	// library neither pings nor unsubscribes, it closes the connection.
	"evalsha", "eval", "script|load", "multi", "exec", "rpushx", "hgetall", "lrange", "exists",
	"zrevrangebyscore", "zrem", "subscribe",
	// The instances' reports (Exporter.Instances): a dropped report.
	"hdel",
	// Called by the scripts.
	"time", "hset", "hget", "hmget", "set", "get", "del", "pexpire", "pttl",
	"rpush", "llen", "ltrim", "lpop", "publish", "zadd", "zrangebyscore",
}

// aclClusterRules are added to aclRule for a Redis Cluster.
var aclClusterRules = []string{"+cluster|slots", "+command"}

// aclRule returns the ACL SETUSER arguments, after the user name, that let a
// RedisStore with prefix work and touch nothing else: its keys and channels
// and exactly aclCommands. HELLO and AUTH need no grant: Redis always allows
// them. extra are further rules (the test adds +client|setinfo on servers
// that have it). The prefix is a glob pattern for Redis: one with *, ?, [ or
// \ in it must be escaped.
func aclRule(password, prefix string, extra ...string) []any {
	rule := []any{"reset", "on", ">" + password, "~" + prefix + "*", "&" + prefix + "*", "-@all"}
	for _, c := range aclCommands {
		rule = append(rule, "+"+c)
	}
	for _, x := range extra {
		rule = append(rule, x)
	}
	return rule
}

// aclSetUser creates (or resets) user with rule, through the default user.
func aclSetUser(t *testing.T, root *redis.Client, user string, rule []any) {
	t.Helper()
	args := append([]any{"acl", "setuser", user}, rule...)
	require.NoError(t, root.Do(testCtx(t), args...).Err(), "ACL SETUSER %s", user)
}

// aclWithout returns rule less the given entries.
func aclWithout(rule []any, drop ...string) []any {
	return slices.DeleteFunc(slices.Clone(rule), func(r any) bool { return slices.Contains(drop, r.(string)) })
}

// aclServer starts a private redis-server whose default user stays open
// (it creates the restricted users) and returns a client for that user.
func aclServer(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.StartT(t, redistest.Options{})
	root := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { root.Close() })
	return srv, root
}

// aclExtra returns the rules the server needs beyond aclRule: go-redis sends
// CLIENT SETINFO on connect and ignores a refusal, but a refusal still lands
// in ACL LOG; servers before 7.2 do not know the command at all.
func aclExtra(t *testing.T, root *redis.Client) []string {
	t.Helper()
	info, err := root.Do(testCtx(t), "command", "info", "client|setinfo").Slice()
	require.NoError(t, err)
	if len(info) == 1 && info[0] != nil {
		return []string{"+client|setinfo"}
	}
	return nil
}

// aclClient connects as user.
func aclClient(t *testing.T, srv *redistest.Server, user, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: user, Password: password, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// aclExporter returns an Exporter on client under prefix.
func aclExporter(t *testing.T, client *redis.Client, prefix string, cfg Config) *Exporter {
	t.Helper()
	e := &env{}
	return e.exporterOn(t, NewRedisStore(client).WithPrefix(prefix), cfg)
}

// TestACL runs every call of the library as a Redis user created with the
// documented ACL rule: everything works, no command is refused (ACL LOG stays
// empty), and the commands the server saw are exactly those the rule grants
// (plus HELLO, always allowed). The user cannot touch keys outside its prefix.
func TestACL(t *testing.T) {
	srv, root := aclServer(t)
	ctx := testCtx(t)
	const prefix, password = "exporter:", "s3cret-for-the-test"
	extra := aclExtra(t, root)
	aclSetUser(t, root, "exporter", aclRule(password, prefix, extra...))
	require.NoError(t, root.Do(ctx, "acl", "log", "reset").Err())

	mon := aclStartMonitor(t, srv.Addr)
	// Fresh clients, so their connection setup is seen by MONITOR.
	cfg := Config{ChunkSize: testChunk, LeaseTTL: time.Second}
	a := aclExporter(t, aclClient(t, srv, "exporter", password), prefix, cfg)
	b := aclExporter(t, aclClient(t, srv, "exporter", password), prefix, cfg)

	// A full export, read from the other instance.
	data := randomBytes(5*testChunk + 100)
	job, err := a.StartExport(ctx, alice, bytes.NewReader(data), WithTotal(int64(len(data))),
		WithMetadata(map[string]string{"filename": "a.csv"}))
	require.NoError(t, err)
	_, err = b.GetExportStatus(ctx, alice, job.ID)
	require.NoError(t, err)
	done := waitFor(t, b, alice, job.ID, StatusCompleted)
	d, err := b.OpenExport(ctx, alice, job.ID)
	require.NoError(t, err)
	got, err := io.ReadAll(d)
	require.NoError(t, err)
	require.Equal(t, data, got)
	part := make([]byte, 10)
	_, err = d.ReadAt(part, int64(len(data))-10)
	require.NoError(t, err)
	require.Equal(t, data[len(data)-10:], part)
	require.NoError(t, d.Close())
	_, err = b.CancelExport(ctx, alice, done.ID)
	require.ErrorIs(t, err, ErrFinished)
	list, err := b.ListExports(ctx, alice, ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Jobs, 1)
	require.Equal(t, job.ID, list.Jobs[0].ID)

	// An export cancelled from the other instance: the cancel reaches the
	// instance that runs it through the events channel.
	src := newFeedSource(randomBytes(2 * testChunk))
	t.Cleanup(func() { src.Close() })
	running, err := a.StartExport(ctx, alice, src)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		j, err := b.GetExportStatus(ctx, alice, running.ID)
		require.NoError(t, err)
		return j.Bytes == 2*testChunk
	}, 10*time.Second, time.Millisecond)
	cancelled, err := b.CancelExport(ctx, alice, running.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, cancelled.Status)
	src.requireClosedOnce(t)
	waitFor(t, a, alice, running.ID, StatusCancelled)

	// An export whose instance shuts down without waiting: it records the
	// failure under the same ACL.
	lost := newFeedSource(nil)
	t.Cleanup(func() { lost.Close() })
	c := aclExporter(t, aclClient(t, srv, "exporter", password), prefix, cfg)
	dead, err := c.StartExport(ctx, alice, lost)
	require.NoError(t, err)
	stopCtx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, c.Shutdown(stopCtx), context.Canceled)
	j, err := b.WaitExport(ctx, alice, dead.ID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, j.Status)
	require.ErrorIs(t, j.Err(), ErrClosed)

	// An export that expired is forgotten by the next listing (the job's
	// keys are removed here as their TTLs would).
	require.NoError(t, root.Del(ctx, b.store.(*RedisStore).keys(done.ID)...).Err())
	list, err = b.ListExports(ctx, alice, ListOptions{})
	require.NoError(t, err)
	for _, j := range list.Jobs {
		require.NotEqual(t, done.ID, j.ID)
	}

	// Nothing was refused, not even a command whose refusal go-redis
	// ignores, but the eviction check's CONFIG GET, which the rule leaves
	// out on purpose (CONFIG GET also reads passwords).
	entries, err := root.Do(ctx, "acl", "log").Slice()
	require.NoError(t, err)
	require.Empty(t, aclRefusals(entries), "ACL LOG: commands were refused")

	// The server saw exactly the granted commands, and HELLO: the rule is
	// the least the library needs (a command it no longer sends shows up
	// here, one it newly sends fails above).
	seen := slices.DeleteFunc(mon.stop(t, root), func(c string) bool { return c == "hello" || c == "auth" })
	granted := slices.Clone(aclCommands)
	for _, x := range extra {
		granted = append(granted, strings.TrimPrefix(x, "+"))
	}
	slices.Sort(granted)
	require.Equal(t, granted, seen, "the commands the library sent are not the ones the rule grants")

	// The user cannot reach outside its prefix, with keys or channels.
	rc := aclClient(t, srv, "exporter", password)
	err = rc.Set(ctx, "other", "x", 0).Err()
	require.ErrorContains(t, err, "NOPERM")
	err = rc.Eval(ctx, "return redis.call('SET', KEYS[1], 'x')", []string{"other"}).Err()
	require.ErrorContains(t, err, "NOPERM")
	err = rc.Publish(ctx, "other", "x").Err()
	require.ErrorContains(t, err, "NOPERM")
	err = rc.FlushAll(ctx).Err()
	require.ErrorContains(t, err, "NOPERM")
	require.Zero(t, root.Exists(ctx, "other").Val())
	outside := aclExporter(t, rc, "billing:", cfg)
	_, err = outside.StartExport(ctx, alice, bytes.NewReader(data))
	require.ErrorContains(t, err, "NOPERM", "an Exporter on another prefix fails at once")
	_, err = outside.GetExportStatus(ctx, alice, job.ID)
	require.ErrorContains(t, err, "NOPERM")
}

// TestACLMissingGrant: a user that lacks one grant the library needs gets a
// clear error (the server's NOPERM) from the call or in Job.Error, and no
// call hangs.
func TestACLMissingGrant(t *testing.T) {
	srv, root := aclServer(t)
	const password = "pw"
	extra := aclExtra(t, root)
	cfg := Config{ChunkSize: testChunk, LeaseTTL: 500 * time.Millisecond}

	t.Run("no rpushx", func(t *testing.T) {
		ctx := testCtx(t)
		prefix := "p1:"
		aclSetUser(t, root, "norpushx", aclWithout(aclRule(password, prefix, extra...), "+rpushx"))
		x := aclExporter(t, aclClient(t, srv, "norpushx", password), prefix, cfg)
		// One chunk or several: both store chunks with RPUSHX.
		for _, size := range []int{10, 3 * testChunk} {
			job, err := x.StartExport(ctx, alice, bytes.NewReader(randomBytes(size)))
			require.NoError(t, err, "recording the job needs no RPUSHX")
			job, err = x.WaitExport(ctx, alice, job.ID)
			require.NoError(t, err)
			require.Equal(t, StatusFailed, job.Status)
			require.Contains(t, job.Error, "NOPERM")
			require.Contains(t, job.Error, "rpushx")
		}
	})

	t.Run("no script command", func(t *testing.T) {
		ctx := testCtx(t)
		prefix := "p2:"
		// Only the scripts call TIME: without it the first script fails.
		aclSetUser(t, root, "notime", aclWithout(aclRule(password, prefix, extra...), "+time"))
		x := aclExporter(t, aclClient(t, srv, "notime", password), prefix, cfg)
		_, err := x.StartExport(ctx, alice, bytes.NewReader(randomBytes(10)))
		require.ErrorContains(t, err, "can't run this command")
	})

	t.Run("no keys", func(t *testing.T) {
		ctx := testCtx(t)
		aclSetUser(t, root, "nokeys", aclWithout(aclRule(password, "p3:", extra...), "~p3:*"))
		x := aclExporter(t, aclClient(t, srv, "nokeys", password), "p3:", cfg)
		_, err := x.StartExport(ctx, alice, bytes.NewReader(randomBytes(10)))
		require.ErrorContains(t, err, "NOPERM")
		_, err = x.GetExportStatus(ctx, alice, "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59")
		require.ErrorContains(t, err, "NOPERM")
	})

	// Without the channel pattern the PUBLISH in the scripts that end a job
	// is refused. Redis does not undo a script's writes when a later
	// redis.call fails, so what an ending script wrote before its PUBLISH
	// stays while the call reports the error.
	noChannels := func(t *testing.T, prefix string) *Exporter {
		t.Helper()
		user := "nochannels-" + strings.TrimSuffix(prefix, ":")
		aclSetUser(t, root, user, aclWithout(aclRule(password, prefix, extra...), "&"+prefix+"*"))
		return aclExporter(t, aclClient(t, srv, user, password), prefix, cfg)
	}

	t.Run("no channels: export", func(t *testing.T) {
		// The refusal must surface from StartExport, from WaitExport or in
		// Job.Error, within a few leases.
		ctx := testCtx(t)
		x := noChannels(t, "p4:")
		job, err := x.StartExport(ctx, alice, bytes.NewReader(randomBytes(3*testChunk)))
		if err != nil {
			require.ErrorContains(t, err, "publish")
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got, err := x.WaitExport(wctx, alice, job.ID)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "WaitExport hung")
		if err == nil {
			require.Contains(t, got.Error, "publish", "the export ended %s with no sign of the refused PUBLISH", got.Status)
		} else {
			require.ErrorContains(t, err, "publish")
		}
	})

	t.Run("no channels: cancel", func(t *testing.T) {
		// A cancel either succeeds or fails without cancelling.
		ctx := testCtx(t)
		x := noChannels(t, "p5:")
		src := newFeedSource(randomBytes(testChunk))
		t.Cleanup(func() { src.Close() })
		job, err := x.StartExport(ctx, alice, src)
		if err != nil {
			require.ErrorContains(t, err, "publish")
			return
		}
		waitStatus(t, x, alice, job.ID, StatusRunning)
		cancelled, err := x.CancelExport(ctx, alice, job.ID)
		now, gerr := x.GetExportStatus(ctx, alice, job.ID)
		if err == nil {
			require.Equal(t, StatusCancelled, cancelled.Status)
			return
		}
		require.ErrorContains(t, err, "publish")
		if gerr == nil {
			require.NotEqual(t, StatusCancelled, now.Status,
				"CancelExport returned %q, yet the job is cancelled", err)
		}
	})
}

// aclMonitor records the commands a server executes, through MONITOR on a raw
// connection (go-redis's MonitorCmd spins while it waits).
type aclMonitor struct {
	conn net.Conn
	done chan struct{}
	mu   sync.Mutex
	seen map[string]bool
}

func aclStartMonitor(t *testing.T, addr string) *aclMonitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	m := &aclMonitor{conn: conn, done: make(chan struct{}), seen: map[string]bool{}}
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	r := bufio.NewReaderSize(conn, 1<<20)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", line)
	go m.read(r)
	t.Cleanup(func() { conn.Close(); <-m.done })
	return m
}

// read parses lines such as
//
//	+1700000000.123456 [0 127.0.0.1:5000] "evalsha" "ab..." "3" ...
//	+1700000000.123457 [0 lua] "HSET" ...
//
// into the command name, with the subcommand of SCRIPT and CLIENT.
func (m *aclMonitor) read(r *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		_, rest, ok := strings.Cut(line, "] ")
		if !ok {
			continue
		}
		args := aclMonitorArgs(rest, 2)
		if len(args) == 0 {
			continue
		}
		name := strings.ToLower(args[0])
		if (name == "script" || name == "client") && len(args) > 1 {
			name += "|" + strings.ToLower(args[1])
		}
		m.mu.Lock()
		m.seen[name] = true
		m.mu.Unlock()
	}
}

// aclMonitorArgs returns up to n quoted arguments of a MONITOR line.
func aclMonitorArgs(s string, n int) []string {
	var out []string
	for len(out) < n {
		s = strings.TrimLeft(s, " ")
		if !strings.HasPrefix(s, `"`) {
			break
		}
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			break
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			break
		}
		out = append(out, v)
		s = s[len(q):]
	}
	return out
}

// stop ends the monitor and returns the commands seen, sorted. It first
// sends ECHO through root and waits for MONITOR to show it, so every
// command executed before is in.
func (m *aclMonitor) stop(t *testing.T, root *redis.Client) []string {
	t.Helper()
	require.NoError(t, root.Echo(testCtx(t), "end of monitor").Err())
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.seen["echo"]
	}, 10*time.Second, time.Millisecond, "MONITOR did not show the closing ECHO")
	delete(m.seen, "echo")
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for c := range m.seen {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// TestACLCluster runs a round trip on the shared Redis Cluster as a user
// created on every node with the rule plus what a ClusterClient sends on
// its own: CLUSTER SLOTS for the slot map and COMMAND for the key
// positions of each command. The user, unique to the test, is deleted at
// the end.
func TestACLCluster(t *testing.T) {
	_, cl := sharedServers(t)
	ctx := testCtx(t)
	user, password, prefix := "exporter-"+randomHex(4), randomHex(16), "t"+randomHex(6)+":"
	var roots []*redis.Client
	for _, addr := range cl.Addrs {
		root := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() {
			root.Do(context.Background(), "acl", "deluser", user)
			root.Close()
		})
		aclSetUser(t, root, user, aclRule(password, prefix, append(aclExtra(t, root), aclClusterRules...)...))
		roots = append(roots, root)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, Username: user, Password: password,
		ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	e := &env{}
	cfg := Config{ChunkSize: testChunk}
	a := e.exporterOn(t, NewRedisStore(client).WithPrefix(prefix), cfg)

	var ids []string
	for range 4 { // jobs spread over the nodes
		data := randomBytes(3*testChunk + 1)
		job, err := a.StartExport(ctx, alice, bytes.NewReader(data))
		require.NoError(t, err)
		waitFor(t, a, alice, job.ID, StatusCompleted)
		d, err := a.OpenExport(ctx, alice, job.ID)
		require.NoError(t, err)
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		require.NoError(t, d.Close())
		require.Equal(t, data, got)
		ids = append(ids, job.ID)
	}
	src := newFeedSource(randomBytes(testChunk))
	t.Cleanup(func() { src.Close() })
	running, err := a.StartExport(ctx, alice, src)
	require.NoError(t, err)
	waitStatus(t, a, alice, running.ID, StatusRunning)
	_, err = a.CancelExport(ctx, alice, running.ID)
	require.NoError(t, err)
	src.requireClosedOnce(t)
	list, err := a.ListExports(ctx, alice, ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Jobs, len(ids)+1)

	for _, root := range roots {
		entries, err := root.Do(ctx, "acl", "log").Slice()
		require.NoError(t, err)
		for _, entry := range aclRefusals(entries) {
			require.NotContains(t, fmt.Sprint(entry), user, "ACL LOG of %s", root.Options().Addr)
		}
	}
}

// TestACLDocumented: the rule in docs/security.md is the one TestACL tests.
func TestACLDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("docs", "security.md"))
	require.NoError(t, err)
	const head = "ACL SETUSER exporter "
	var line string
	for l := range strings.Lines(string(doc)) {
		if strings.HasPrefix(l, head) {
			require.Empty(t, line, "docs/security.md has two ACL SETUSER lines")
			line = strings.TrimSpace(strings.TrimPrefix(l, head))
		}
	}
	require.NotEmpty(t, line, "docs/security.md has no line starting with %q", head)
	var want []string
	for _, r := range aclRule("PASSWORD", DefaultPrefix) {
		want = append(want, r.(string))
	}
	require.Equal(t, strings.Join(want, " "), line)
}

// aclRefusals returns the entries of ACL LOG but the refusals of the
// eviction check's CONFIG GET (see eviction.go), which the documented
// rule does not grant and the Exporter expects.
func aclRefusals(entries []any) []any {
	var out []any
	for _, e := range entries {
		if !strings.Contains(fmt.Sprint(e), "config|get") {
			out = append(out, e)
		}
	}
	return out
}
