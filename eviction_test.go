package exporter

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/exporterkit/exporter/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestEvictionPolicyWarning: an Exporter on a Redis that may evict its
// keys (volatile-* or allkeys-*) logs one warning naming the policy when
// its background work starts, however many exports follow; on noeviction
// it says nothing; and a server that refuses CONFIG GET (an ACL without
// +config|get) is not checked, and exports work as ever.
func TestEvictionPolicyWarning(t *testing.T) {
	srv := redistest.StartT(t, redistest.Options{})
	root := faultClient(t, srv.Addr)
	ctx := testCtx(t)
	warnings := func(logs *recordingHandler) []string {
		var out []string
		for _, r := range logs.snapshot() {
			if strings.HasPrefix(r.msg, "Redis may evict") {
				out = append(out, r.attrs["maxmemory-policy"])
			}
		}
		return out
	}
	run := func(t *testing.T, client *redis.Client) *recordingHandler {
		t.Helper()
		logs := newRecordingHandler()
		x := newExporterT(t, NewRedisStore(client).WithPrefix("evict:"), Config{Logger: slog.New(logs)})
		for range 3 {
			job, err := x.StartExport(ctx, alice, strings.NewReader("rows"))
			require.NoError(t, err)
			waitFor(t, x, alice, job.ID, StatusCompleted)
		}
		require.NoError(t, x.Shutdown(ctx)) // the check has run
		return logs
	}
	for _, policy := range []string{"volatile-lru", "allkeys-lru", "volatile-ttl", "noeviction"} {
		t.Run(policy, func(t *testing.T) {
			require.NoError(t, root.ConfigSet(ctx, "maxmemory-policy", policy).Err())
			got := warnings(run(t, faultClient(t, srv.Addr)))
			if policy == "noeviction" {
				require.Empty(t, got)
				return
			}
			require.Equal(t, []string{policy}, got, "one warning, naming the policy")
		})
	}
	t.Run("CONFIG GET refused", func(t *testing.T) {
		require.NoError(t, root.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
		aclSetUser(t, root, "exporter", aclRule("pw", "evict:", aclExtra(t, root)...))
		client := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "exporter", Password: "pw",
			ContextTimeoutEnabled: true, DialTimeout: time.Second})
		t.Cleanup(func() { client.Close() })
		require.Empty(t, warnings(run(t, client)))
	})
	require.NoError(t, root.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
}
