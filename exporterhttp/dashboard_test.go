package exporterhttp_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// withDashboard turns the dashboard on.
func withDashboard(cfg *exporterhttp.Config) { cfg.Dashboard = true }

// forEachDashboard is forEachBackend with the dashboard on.
func forEachDashboard(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	for _, name := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, newEnv(t, name, withDashboard))
		})
	}
}

// dashboardRoutes are the dashboard's routes, relative to the mount.
var dashboardRoutes = []string{"/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css",
	"/dashboard/exports", "/dashboard/instances"}

// TestDashboardOff checks that without Config.Dashboard the dashboard's
// paths are unknown ones, even for an admin.
func TestDashboardOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	for _, path := range dashboardRoutes {
		rep := e.request(t, http.MethodGet, path, "root", "", "Accept", "text/html")
		requireProblem(t, rep, http.StatusNotFound, "not_found")
	}
}

// TestDashboardAccess checks who may use each route of the dashboard: 401
// without a user, 403 without the admin permission, 500 when
// authentication fails, 405 for another method; and that the page alone
// answers a browser (Accept: text/html) with an HTML error page.
func TestDashboardAccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", withDashboard)
	for _, path := range dashboardRoutes {
		t.Run(path, func(t *testing.T) {
			rep := e.request(t, http.MethodGet, path, "root", "")
			require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			requireProblem(t, e.request(t, http.MethodGet, path, "", ""), http.StatusUnauthorized, "unauthenticated")
			requireProblem(t, e.request(t, http.MethodGet, path, "nobody", ""), http.StatusUnauthorized, "unauthenticated")
			for _, user := range []string{"alice", "guest"} {
				requireProblem(t, e.request(t, http.MethodGet, path, user, ""), http.StatusForbidden, "forbidden")
			}
			p := requireProblem(t, e.request(t, http.MethodGet, path, "broken", ""), http.StatusInternalServerError, "internal")
			require.NotContains(t, p.Detail, "hunter2")

			// A browser's navigation accepts text/html: only the page
			// answers it with HTML.
			const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
			for _, tt := range []struct {
				user   string
				status int
				title  string
			}{
				{"alice", http.StatusForbidden, "Forbidden"},
				{"", http.StatusUnauthorized, "Unauthenticated"},
			} {
				rep := e.request(t, http.MethodGet, path, tt.user, "", "Accept", browser)
				if path != "/dashboard" {
					requireProblem(t, rep, tt.status, strings.ToLower(tt.title))
					continue
				}
				require.Equal(t, tt.status, rep.status, "%s", rep.body)
				require.Equal(t, "text/html; charset=utf-8", rep.header.Get("Content-Type"))
				require.Equal(t, "no-store", rep.header.Get("Cache-Control"))
				require.Contains(t, string(rep.body), "<title>"+strconv.Itoa(tt.status)+" "+tt.title+"</title>")
				require.Contains(t, string(rep.body), tt.title)
				require.Contains(t, string(rep.body), "<code>"+strings.ToLower(tt.title)+"</code>")
				require.NotContains(t, string(rep.body), "<script")
			}
			// An Accept that refuses HTML, or only takes anything, gets
			// the problem document.
			for _, accept := range []string{"*/*", "application/json", "text/html;q=0"} {
				requireProblem(t, e.request(t, http.MethodGet, path, "alice", "", "Accept", accept), http.StatusForbidden, "forbidden")
			}
		})
	}
	for _, tt := range []struct{ method, path, allow string }{
		{http.MethodPost, "/dashboard/exports", "GET, HEAD"},
		{http.MethodDelete, "/dashboard/instances", "GET, HEAD"},
		{http.MethodPut, "/dashboard/dashboard.js", "GET, HEAD"},
		{http.MethodPost, "/dashboard", "DELETE, GET, HEAD"}, // DELETE is /{id}'s
	} {
		rep := e.request(t, tt.method, tt.path, "root", "")
		requireProblem(t, rep, http.StatusMethodNotAllowed, "method_not_allowed")
		require.Equal(t, tt.allow, rep.header.Get("Allow"))
	}
	for _, path := range []string{"/dashboard/", "/dashboard/other", "/dashboard/exports/x", "/dashboard/index.html"} {
		requireProblem(t, e.request(t, http.MethodGet, path, "root", ""), http.StatusNotFound, "not_found")
	}
}

// externalRef finds what could load from another origin in HTML, script
// or style: an absolute or scheme-relative URL, an @import, a url().
var externalRef = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://|["'(=\s]//[a-z0-9-]+\.|@import|(?-i:\burl\()`)

// TestDashboardPage checks the page and what it loads: their content
// types, a Content-Security-Policy that keeps it to its origin, no
// reference to another origin, and caching by ETag.
func TestDashboardPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", withDashboard)
	rep := e.request(t, http.MethodGet, "/dashboard", "root", "")
	require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
	require.Equal(t, "text/html; charset=utf-8", rep.header.Get("Content-Type"))
	csp := rep.header.Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'none'")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "connect-src 'self'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.Equal(t, "nosniff", rep.header.Get("X-Content-Type-Options"))
	page := string(rep.body)
	require.Contains(t, page, "<title>Exports dashboard</title>")
	require.Contains(t, page, "every 2 seconds", "the page says how often it refreshes")
	require.NotRegexp(t, externalRef, page)
	require.NotContains(t, page, "<script>", "no inline script: the policy refuses it")
	require.NotContains(t, page, "style=", "no inline style: the policy refuses it")

	// Every src and href of the page is served, with its type.
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	require.Len(t, refs, 2, "the script and the style")
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	base, err := url.Parse(e.url + "/dashboard")
	require.NoError(t, err)
	for _, ref := range refs {
		u, err := base.Parse(ref[1])
		require.NoError(t, err)
		path := strings.TrimPrefix(u.Path, "/exports")
		rep := e.request(t, http.MethodGet, path, "root", "")
		require.Equal(t, http.StatusOK, rep.status, "%s: %s", path, rep.body)
		ext := path[strings.LastIndex(path, "."):]
		require.Equal(t, types[ext], rep.header.Get("Content-Type"), path)
		require.NotRegexp(t, externalRef, string(rep.body), path)
		require.NotEmpty(t, rep.body)

		tag := rep.header.Get("ETag")
		require.Regexp(t, `^"[0-9a-f]{64}"$`, tag)
		again := e.request(t, http.MethodGet, path, "root", "", "If-None-Match", tag)
		require.Equal(t, http.StatusNotModified, again.status)
		require.Empty(t, again.body)
	}
	head := e.request(t, http.MethodHead, "/dashboard", "root", "")
	require.Equal(t, http.StatusOK, head.status)
	require.Empty(t, head.body)
}

// dashboardPage is the body of GET /dashboard/exports.
type dashboardPage struct {
	Exports []*exporter.Job `json:"exports"`
	Next    *string         `json:"next"`
}

// dashboardList GETs /dashboard/exports with query as root.
func (e *env) dashboardList(t *testing.T, query string) dashboardPage {
	t.Helper()
	rep := e.request(t, http.MethodGet, "/dashboard/exports"+query, "root", "")
	require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
	require.Equal(t, "application/json", rep.header.Get("Content-Type"))
	var p dashboardPage
	require.NoError(t, json.Unmarshal(rep.body, &p), "%s", rep.body)
	require.NotNil(t, p.Exports, "[], not null: %s", rep.body)
	return p
}

func ids(jobs []*exporter.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// TestDashboardExports checks GET /dashboard/exports: every owner's
// exports newest first, one owner's, by status, in pages; only for an
// admin, who acts on anyone's export through the export routes.
func TestDashboardExports(t *testing.T) {
	forEachDashboard(t, func(t *testing.T, e *env) {
		a1 := e.startCSV(t, "alice", 1, "")
		a2 := e.startCSV(t, "alice", 2, "")
		b1 := e.startCSV(t, "bob", 3, "")
		b2 := e.start(t, "bob", "gate", "null")
		e.gate.feed(t, chunkSize)
		e.running(t, "bob", b2.ID, chunkSize)

		all := e.dashboardList(t, "")
		require.Equal(t, []string{b2.ID, b1.ID, a2.ID, a1.ID}, ids(all.Exports), "every owner's, newest first")
		require.Nil(t, all.Next)

		require.Equal(t, []string{b2.ID, b1.ID}, ids(e.dashboardList(t, "?owner=bob").Exports))
		require.Equal(t, []string{a2.ID, a1.ID}, ids(e.dashboardList(t, "?owner=alice&limit=5").Exports))
		require.Empty(t, e.dashboardList(t, "?owner=root").Exports)
		require.Empty(t, e.dashboardList(t, "?owner=carol").Exports)

		running := e.dashboardList(t, "?status=running")
		require.Equal(t, []string{b2.ID}, ids(running.Exports))
		require.Equal(t, exporter.StatusRunning, running.Exports[0].Status)
		require.Equal(t, "bob", running.Exports[0].Owner)
		require.Equal(t, []string{b1.ID, a2.ID, a1.ID}, ids(e.dashboardList(t, "?status=completed").Exports))
		require.Equal(t, []string{a2.ID, a1.ID}, ids(e.dashboardList(t, "?status=completed&owner=alice").Exports))
		require.Empty(t, e.dashboardList(t, "?status=failed").Exports)

		// Pages follow "next"; a filtered page may be short while more follow.
		var paged []string
		query := "?limit=3"
		for range 5 {
			p := e.dashboardList(t, query)
			require.LessOrEqual(t, len(p.Exports), 3)
			paged = append(paged, ids(p.Exports)...)
			if p.Next == nil {
				break
			}
			query = "?limit=3&cursor=" + url.QueryEscape(*p.Next)
		}
		require.Equal(t, ids(all.Exports), paged)
		first := e.dashboardList(t, "?limit=1&status=completed")
		require.Equal(t, []string{b1.ID}, ids(first.Exports))
		require.NotNil(t, first.Next)
		rest := e.dashboardList(t, "?limit=5&status=completed&cursor="+url.QueryEscape(*first.Next))
		require.Equal(t, []string{a2.ID, a1.ID}, ids(rest.Exports))

		// An admin cancels and downloads anyone's export through the
		// export routes, as the page does.
		rep := e.request(t, http.MethodDelete, "/"+b2.ID, "root", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, exporter.StatusCancelled, decodeJob(t, rep).Status)
		require.Equal(t, []string{b2.ID}, ids(e.dashboardList(t, "?status=cancelled").Exports))
		require.Empty(t, e.dashboardList(t, "?status=running").Exports)
		rep = e.request(t, http.MethodGet, "/"+a2.ID+"/download", "root", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, csvData(2), rep.body)

		// Only admins, even for their own list.
		for _, q := range []string{"", "?owner=bob", "?owner=alice", "?status=completed"} {
			requireProblem(t, e.request(t, http.MethodGet, "/dashboard/exports"+q, "alice", ""), http.StatusForbidden, "forbidden")
		}
		requireProblem(t, e.request(t, http.MethodGet, "/dashboard/exports", "", ""), http.StatusUnauthorized, "unauthenticated")

		for _, q := range []string{"?status=bogus", "?status=RUNNING", "?status=" + strings.Repeat("x", 5000),
			"?limit=0", "?limit=1001", "?limit=x", "?cursor=bogus", "?cursor=" + strings.Repeat("9", 300),
			"?owner=" + strings.Repeat("o", 257), "?owner=bob&cursor=bogus"} {
			p := requireProblem(t, e.request(t, http.MethodGet, "/dashboard/exports"+q, "root", ""), http.StatusBadRequest, "invalid")
			require.LessOrEqual(t, len(p.Detail), 256, p.Detail)
		}
	})
}

// instancesBody is the body of GET /dashboard/instances.
type instancesBody struct {
	Instances []*exporter.Instance `json:"instances"`
	Totals    struct {
		Instances   int              `json:"instances"`
		Running     int              `json:"running"`
		Pending     int              `json:"pending"`
		MaxRunning  int              `json:"max_running"`
		Throughput  int64            `json:"throughput"`
		BytesStored int64            `json:"bytes_stored"`
		Began       int64            `json:"began"`
		Completed   int64            `json:"completed"`
		Failed      int64            `json:"failed"`
		Cancelled   int64            `json:"cancelled"`
		Failures    map[string]int64 `json:"failures"`
	} `json:"totals"`
}

// TestDashboardInstances checks GET /dashboard/instances after two
// instances ran exports that completed, failed by their source and were
// cancelled: each instance's report, and totals that sum them.
func TestDashboardInstances(t *testing.T) {
	forEachDashboard(t, func(t *testing.T, e *env) {
		// A second instance of the service shares the store; it runs
		// "csv" exports too.
		second, err := exporter.New(e.store, exporter.Config{ChunkSize: chunkSize, MaxAttempts: 1, MaxRunning: 3,
			AdminPermission: adminPermission, Sources: map[string]exporter.Source{"csv": csvSource}})
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, second.Shutdown(ctx))
		})

		e.startCSV(t, "alice", 10, "")
		e.startCSV(t, "bob", 20, "")
		failed, err := e.exp.Enqueue(t.Context(), exporter.User{ID: "alice", Permissions: []string{exporter.DefaultPermission}}, "fail", nil)
		require.NoError(t, err)
		require.Equal(t, exporter.CodeSource, e.wait(t, "alice", failed.ID).ErrorCode)
		gated := e.start(t, "bob", "gate", "null")
		e.gate.feed(t, chunkSize)
		e.running(t, "bob", gated.ID, chunkSize)
		rep := e.request(t, http.MethodDelete, "/"+gated.ID, "bob", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		e.wait(t, "bob", gated.ID)

		var body instancesBody
		require.Eventually(t, func() bool {
			rep := e.request(t, http.MethodGet, "/dashboard/instances", "root", "")
			require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			require.Equal(t, "application/json", rep.header.Get("Content-Type"))
			body = instancesBody{}
			require.NoError(t, json.Unmarshal(rep.body, &body), "%s", rep.body)
			tt := body.Totals
			return len(body.Instances) == 2 && tt.Completed == 2 && tt.Failed == 1 && tt.Cancelled == 1 && tt.Running == 0
		}, 15*time.Second, 50*time.Millisecond, "the reports of both instances, after the exports ended")

		tt := body.Totals
		require.Equal(t, 2, tt.Instances)
		require.Equal(t, map[string]int64{exporter.CodeSource: 1}, tt.Failures)
		require.Equal(t, int64(4), tt.Began)
		require.Equal(t, 16+3, tt.MaxRunning, "the default and the second's")
		require.Zero(t, tt.Pending)
		require.GreaterOrEqual(t, tt.BytesStored, int64(len(csvData(10))+len(csvData(20))+chunkSize))
		var sum instancesBody
		sum.Totals.Failures = map[string]int64{}
		for _, in := range body.Instances {
			require.NotEmpty(t, in.ID)
			require.NotEmpty(t, in.Host)
			require.Positive(t, in.PID)
			require.False(t, in.Seen.IsZero())
			s := &sum.Totals
			s.Running += in.Running
			s.Pending += in.Pending
			s.MaxRunning += in.MaxRunning
			s.Throughput += in.Throughput
			s.BytesStored += in.BytesStored
			s.Began += in.Began
			s.Completed += in.Completed
			s.Failed += in.Failed
			s.Cancelled += in.Cancelled
			for code, n := range in.Failures {
				s.Failures[code] += n
			}
		}
		sum.Totals.Instances = len(body.Instances)
		require.Equal(t, sum.Totals, body.Totals, "the totals sum the instances")
		require.True(t, slices.IsSortedFunc(body.Instances, func(a, b *exporter.Instance) int { return strings.Compare(a.ID, b.ID) }))
		kinds := map[int][]string{}
		for _, in := range body.Instances {
			kinds[in.MaxRunning] = in.Kinds
		}
		require.Equal(t, []string{"csv"}, kinds[3], "the second instance runs csv only")
		require.Contains(t, kinds[16], "gate")

		requireProblem(t, e.request(t, http.MethodGet, "/dashboard/instances", "alice", ""), http.StatusForbidden, "forbidden")
	})
}

// plainStore is a Store with none of the optional abilities: it neither
// lists every owner's exports nor keeps instance reports.
type plainStore struct{ exporter.Store }

// TestDashboardUnsupported checks a dashboard on a store that cannot list
// every owner's exports nor keep reports: the page is served to admins
// still, one owner's list works, and the rest is 501 "unsupported".
func TestDashboardUnsupported(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { client.Close() })
	exp, err := exporter.New(plainStore{exporter.NewRedisStore(client)}, exporter.Config{AdminPermission: adminPermission})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, exp.Shutdown(ctx))
	})
	h, err := exporterhttp.New(exporterhttp.Config{Exporter: exp, Authenticate: authenticate, Dashboard: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	e := &env{exp: exp, h: h, srv: httptest.NewServer(http.StripPrefix("/exports", h))}
	t.Cleanup(e.srv.Close)
	e.url = e.srv.URL + "/exports"

	require.Equal(t, http.StatusOK, e.request(t, http.MethodGet, "/dashboard", "root", "").status)
	requireProblem(t, e.request(t, http.MethodGet, "/dashboard", "alice", ""), http.StatusForbidden, "forbidden")
	require.Empty(t, e.dashboardList(t, "?owner=bob").Exports)
	requireProblem(t, e.request(t, http.MethodGet, "/dashboard/exports", "root", ""), http.StatusNotImplemented, "unsupported")
	requireProblem(t, e.request(t, http.MethodGet, "/dashboard/instances", "root", ""), http.StatusNotImplemented, "unsupported")
	requireProblem(t, e.request(t, http.MethodGet, "/dashboard/instances", "alice", ""), http.StatusForbidden, "forbidden")
}
