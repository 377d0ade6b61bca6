package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/exporterkit/exporter/internal/redistest"
)

// This file tests exporterhttp's dashboard (Config.Dashboard) in headless
// Chromium. Unlike TestPage it runs no example server: the service is an
// httptest.Server in the test process, with an Exporter on a private
// redis-server, so that the test starts exports of any owner and reads
// their state through the library. Its names start with "dash" to stay
// clear of the other files of the package.

var dashUpdateScreenshot = flag.Bool("update-dashboard-screenshot", false,
	"also write TestDashboard's screenshot to docs/dashboard.png in the repository")

const (
	dashScreenshotTo = "docs/dashboard.png" // relative to the repository root
	dashMaxPNG       = 300 << 10            // bytes; it stays small for the README

	dashTimeout = 3 * time.Minute  // all of TestDashboard's work in the browser
	dashStep    = 20 * time.Second // one wait for the page
	dashPoll    = 50 * time.Millisecond

	dashAdmin       = "root" // the user who holds dashAdminPerm
	dashAdminPerm   = "exporter-admin"
	dashCookie      = "dashboard_user" // names the user; set by GET /login?user=
	dashChunk       = 16 << 10
	dashSlowBytes   = 8 << 20               // a slow export's size: it runs past the test's end
	dashSlowBlock   = 2 << 10               // it reads this many bytes...
	dashSlowEvery   = 20 * time.Millisecond // ...this often: 100 KiB/s
	dashMaxRunning  = 16                    // the Exporter's default Config.MaxRunning
	dashFastRows    = 2000
	dashFailMessage = "disk on fire"
)

// dashServer is the service under test: exporterhttp with the dashboard,
// mounted at /exports/, and a login that sets the user's cookie.
type dashServer struct {
	url  string
	exp  *exporter.Exporter
	down atomic.Bool // while set, every request is cut off, as by a lost network
}

// dashAuthenticate is the service's authentication: the cookie names the
// user; dashAdmin also holds the admin permission.
func dashAuthenticate(r *http.Request) (exporter.User, error) {
	c, err := r.Cookie(dashCookie)
	if err != nil || c.Value == "" {
		return exporter.User{}, fmt.Errorf("no %s cookie: %w", dashCookie, exporter.ErrUnauthenticated)
	}
	perms := []string{exporter.DefaultPermission}
	if c.Value == dashAdmin {
		perms = append(perms, dashAdminPerm)
	}
	return exporter.User{ID: c.Value, Permissions: perms}, nil
}

// dashSlowSource is the durable kind "slow": dashSlowBytes of CSV, read
// dashSlowBlock at a time every dashSlowEvery, until its export's context
// ends.
func dashSlowSource(ctx context.Context, _ *exporter.Job, offset int64) (io.Reader, error) {
	return &dashSlowReader{ctx: ctx, left: dashSlowBytes - offset}, nil
}

type dashSlowReader struct {
	ctx  context.Context
	left int64
}

func (r *dashSlowReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	select {
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	case <-time.After(dashSlowEvery):
	}
	n := int(min(int64(len(p)), dashSlowBlock, r.left))
	for i := range n {
		p[i] = "0123456789abcde\n"[i%16]
	}
	r.left -= int64(n)
	return n, nil
}

// dashCSVSource is the durable kind "csv": args {"rows": n}, at once.
func dashCSVSource(_ context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
	var args struct {
		Rows int `json:"rows"`
	}
	if err := json.Unmarshal(job.Args, &args); err != nil {
		return nil, fmt.Errorf("%w: %w", exporter.ErrPermanent, err)
	}
	var b bytes.Buffer
	b.WriteString("id,amount\n")
	for i := 1; i <= args.Rows; i++ {
		fmt.Fprintf(&b, "%d,%d.%02d\n", i, i*3, i%100)
	}
	return bytes.NewReader(b.Bytes()[offset:]), nil
}

// dashFailSource is the durable kind "fail": its source fails.
func dashFailSource(context.Context, *exporter.Job, int64) (io.Reader, error) {
	return io.MultiReader(strings.NewReader("id,amount\n"), &dashErrReader{}), nil
}

type dashErrReader struct{}

func (*dashErrReader) Read([]byte) (int, error) { return 0, errors.New(dashFailMessage) }

// startDashServer starts the service on a free loopback port, with its
// Exporter on a private redis-server. Everything stops when the test ends.
func startDashServer(t *testing.T) *dashServer {
	t.Helper()
	addr := redistest.StartT(t, redistest.Options{}).Addr
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	exp, err := exporter.New(exporter.NewRedisStore(client).WithPrefix("dashboard:"), exporter.Config{
		ChunkSize:       dashChunk,
		MaxAttempts:     1,
		AdminPermission: dashAdminPerm,
		Sources: map[string]exporter.Source{
			"slow": dashSlowSource,
			"csv":  dashCSVSource,
			"fail": dashFailSource,
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		// The slow exports would run for a minute more: stop them now.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := exp.Shutdown(ctx); err != nil {
			require.ErrorIs(t, err, context.Canceled)
		}
	})
	h, err := exporterhttp.New(exporterhttp.Config{
		Exporter:     exp,
		Authenticate: dashAuthenticate,
		Kinds:        []string{"slow", "csv"},
		Dashboard:    true,
	})
	require.NoError(t, err)

	s := &dashServer{exp: exp}
	mux := http.NewServeMux()
	mux.Handle("/exports/", http.StripPrefix("/exports", h))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: dashCookie, Value: r.URL.Query().Get("user"), Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/exports/dashboard", http.StatusSeeOther)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			panic(http.ErrAbortHandler) // the connection is cut, without a response
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		h.CloseStreams()
		srv.Close()
	})
	s.url = srv.URL
	return s
}

// enqueue starts a durable export of kind as user and returns its id.
func (s *dashServer) enqueue(t *testing.T, user, kind, args string, opts ...exporter.StartOption) string {
	t.Helper()
	u := exporter.User{ID: user, Permissions: []string{exporter.DefaultPermission}}
	job, err := s.exp.Enqueue(t.Context(), u, kind, []byte(args), opts...)
	require.NoError(t, err)
	return job.ID
}

// job returns export id as the admin sees it.
func (s *dashServer) job(t *testing.T, id string) *exporter.Job {
	t.Helper()
	job, err := s.exp.GetExportStatus(t.Context(), dashAdminUser, id)
	require.NoError(t, err)
	return job
}

// wait waits until export id has status.
func (s *dashServer) wait(t *testing.T, id string, status exporter.Status) {
	t.Helper()
	deadline := time.Now().Add(dashStep)
	for s.job(t, id).Status != status {
		if time.Now().After(deadline) {
			t.Fatalf("export %s is %s after %v, not %s", id, s.job(t, id).Status, dashStep, status)
		}
		time.Sleep(dashPoll)
	}
}

var dashAdminUser = exporter.User{ID: dashAdmin, Permissions: []string{exporter.DefaultPermission, dashAdminPerm}}

// dashRow is a row of the exports table, as the page's contract has it.
type dashRow struct {
	ID       string `json:"id"`
	Owner    string `json:"owner"`
	Status   string `json:"status"`
	Read     int64  `json:"read"`
	Progress string `json:"progress"` // the text of the progress cell
	HasBar   bool   `json:"bar"`      // a <progress> element: the total is known
	Code     string `json:"code"`
	Cancel   bool   `json:"cancel"`
	Download string `json:"download"` // the href of the download link, "" if none
}

const dashRowsJS = `[...document.querySelectorAll('#exports tbody tr.export')].map((tr) => ({
	id: tr.dataset.id,
	owner: tr.dataset.owner,
	status: tr.dataset.status,
	read: Number(tr.querySelector('td.progress').dataset.read),
	progress: tr.querySelector('td.progress').textContent,
	bar: !!tr.querySelector('td.progress progress'),
	code: tr.querySelector('td.code').textContent,
	cancel: !!tr.querySelector('button.cancel'),
	download: tr.querySelector('a.download') ? tr.querySelector('a.download').getAttribute('href') : '',
}))`

// dashPage drives the dashboard in one tab.
type dashPage struct {
	t   *testing.T
	ctx context.Context
}

// do runs actions, failing the test with what.
func (p *dashPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, dashStep)
	defer cancel()
	require.NoError(p.t, chromedp.Do(ctx, actions...), what)
}

// eval evaluates expr in the page.
func dashEval[T any](p *dashPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, dashStep)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	require.NoError(p.t, err, "evaluate %s", expr)
	return v
}

// rows returns the rows of the exports table.
func (p *dashPage) rows() []dashRow {
	p.t.Helper()
	return dashEval[[]dashRow](p, dashRowsJS)
}

// waitRows waits until the rows satisfy ok, and returns them.
func (p *dashPage) waitRows(what string, ok func([]dashRow) bool) []dashRow {
	p.t.Helper()
	var rows []dashRow
	deadline := time.Now().Add(dashStep)
	for {
		rows = p.rows()
		if ok(rows) {
			return rows
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waiting %v for %s; the rows are %+v; the page says %q", dashStep, what, rows, p.live())
		}
		time.Sleep(dashPoll)
	}
}

// waitTrue waits until the JavaScript expression is true.
func (p *dashPage) waitTrue(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, dashStep)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(dashPoll), chromedp.WithPollingTimeout(dashStep)))
	require.NoError(p.t, err, "waiting for %s (%s); the page says %q", what, expr, p.live())
}

// live returns what the page says of its freshness.
func (p *dashPage) live() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#live') || {}).textContent || ''`))
	return s
}

// total returns the text of a total in the figures panel.
func (p *dashPage) total(name string) string {
	p.t.Helper()
	return dashEval[string](p, `document.querySelector('#totals [data-total="`+name+`"]').textContent`)
}

// filter sets the status filter, as a person picks it.
func (p *dashPage) filterStatus(status string) {
	p.t.Helper()
	dashEval[bool](p, `(() => { const s = document.querySelector('#status'); s.value = `+strconv.Quote(status)+
		`; s.dispatchEvent(new Event('change')); return true; })()`)
}

func dashIDs(rows []dashRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// dashSameIDs reports whether rows are the exports want, in any order.
func dashSameIDs(rows []dashRow, want ...string) bool {
	got := dashIDs(rows)
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	return slices.Equal(got, want)
}

// TestDashboard drives exporterhttp's dashboard in headless Chromium: an
// admin sees every owner's exports, newest first, filters them by status
// and owner, watches a running export's progress move, cancels it, and
// sees the instance's figures; the page says so when it loses contact and
// recovers; a user without the admin permission is refused the page.
func TestDashboard(t *testing.T) {
	browser := newBrowser(t) // first: it skips the test soonest when Chromium is missing
	s := startDashServer(t)
	ctx, cancel := context.WithTimeout(browser, dashTimeout)
	defer cancel()
	p := &dashPage{t: t, ctx: ctx}

	// Each export is started once the one before runs or ended, so that
	// no two are created in the same millisecond: the order of the list
	// is then the order of the starts.
	t.Log("two owners' exports: completed, failed, running")
	aFast := s.enqueue(t, "alice", "csv", fmt.Sprintf(`{"rows":%d}`, dashFastRows))
	s.wait(t, aFast, exporter.StatusCompleted)
	bFail := s.enqueue(t, "bob", "fail", `null`)
	s.wait(t, bFail, exporter.StatusFailed)
	bFast := s.enqueue(t, "bob", "csv", fmt.Sprintf(`{"rows":%d}`, 2*dashFastRows))
	s.wait(t, bFast, exporter.StatusCompleted)
	aSlow := s.enqueue(t, "alice", "slow", `null`, exporter.WithTotal(dashSlowBytes))
	s.wait(t, aSlow, exporter.StatusRunning)
	bSlow := s.enqueue(t, "bob", "slow", `null`) // no total: its progress is bytes read
	s.wait(t, bSlow, exporter.StatusRunning)
	running := []string{aSlow, bSlow}
	newestFirst := []string{bSlow, aSlow, bFast, bFail, aFast}

	t.Log("open the dashboard as the admin")
	p.do("log in as "+dashAdmin, chromedp.Navigate(s.url+"/login?user="+dashAdmin),
		chromedp.WaitVisible(chromedp.ID("exports")))
	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "Exports dashboard", title)
	p.waitTrue("the page to be live", `document.querySelector('#live').dataset.state === 'live'`)
	require.Contains(t, dashEval[string](p, `document.body.textContent`), "every 2 seconds", "the page says it refreshes")

	rows := p.waitRows("every export, both running", func(rows []dashRow) bool {
		return slices.Equal(dashIDs(rows), newestFirst) && rows[0].Status == "running" && rows[1].Status == "running"
	})
	owners := map[string]string{}
	for _, r := range rows {
		owners[r.ID] = r.Owner
	}
	require.Equal(t, map[string]string{aFast: "alice", aSlow: "alice", bFail: "bob", bFast: "bob", bSlow: "bob"}, owners)
	byID := func(rows []dashRow, id string) dashRow {
		for _, r := range rows {
			if r.ID == id {
				return r
			}
		}
		t.Fatalf("no row for %s in %+v", id, rows)
		return dashRow{}
	}
	failed := byID(rows, bFail)
	require.Equal(t, "failed", failed.Status)
	require.Equal(t, exporter.CodeSource, failed.Code)
	require.False(t, failed.Cancel)
	require.Empty(t, failed.Download)
	for _, id := range []string{aFast, bFast} {
		r := byID(rows, id)
		require.Equal(t, "completed", r.Status)
		require.Equal(t, id+"/download", r.Download, "the link resolves to /exports/<id>/download")
		require.False(t, r.Cancel)
	}
	href := dashEval[string](p, `document.querySelector('#exports tr[data-id="`+aFast+`"] a.download').href`)
	require.Equal(t, s.url+"/exports/"+aFast+"/download", href)
	status := dashEval[int](p, `fetch(`+strconv.Quote(href)+`).then((r) => r.status)`)
	require.Equal(t, http.StatusOK, status, "the admin downloads alice's export")

	t.Log("progress moves")
	first := byID(rows, aSlow)
	moved := p.waitRows("the slow exports' progress to move", func(rows []dashRow) bool {
		a, b := byID(rows, aSlow), byID(rows, bSlow)
		return a.Read > first.Read && a.Read >= 2*dashChunk && b.Read >= 2*dashChunk
	})
	a, b := byID(moved, aSlow), byID(moved, bSlow)
	t.Logf("progress: %q, %q", a.Progress, b.Progress)
	require.True(t, a.HasBar, "a known total shows a bar")
	require.True(t, strings.HasSuffix(a.Progress, " / 8.0 MiB"), a.Progress)
	require.Regexp(t, `^[0-9.]+ (KiB|MiB) read$`, b.Progress)
	require.False(t, b.HasBar, "no total, no bar")
	require.True(t, a.Cancel && b.Cancel, "a running export can be cancelled")

	t.Log("the figures show the instance")
	instances, err := s.exp.Instances(t.Context(), dashAdminUser)
	require.NoError(t, err)
	require.Len(t, instances, 1)
	inst := instances[0]
	p.waitTrue("the instance's row and totals", `(() => {
		const tr = document.querySelector('#instances tr.instance[data-id=`+strconv.Quote(inst.ID)+`]');
		const total = (n) => document.querySelector('#totals [data-total="' + n + '"]').textContent;
		return tr !== null && tr.querySelector('td.load').textContent === '2 / 0 / `+strconv.Itoa(dashMaxRunning)+`' &&
			total('running') === '2 / `+strconv.Itoa(dashMaxRunning)+`' && total('completed') === '2' &&
			total('failed') === '1' && total('instances') === '1';
	})()`)
	require.Equal(t, exporter.CodeSource+" 1", p.total("failures"))
	require.Regexp(t, `^[0-9.]+ (B|KiB|MiB)/s$`, p.total("throughput"))

	t.Log("filter by status, then by owner")
	p.filterStatus("running")
	p.waitRows("the running exports only", func(rows []dashRow) bool {
		return dashSameIDs(rows, running...) && !slices.ContainsFunc(rows, func(r dashRow) bool { return r.Status != "running" })
	})
	p.filterStatus("completed")
	p.waitRows("the completed exports only", func(rows []dashRow) bool { return dashSameIDs(rows, aFast, bFast) })
	p.filterStatus("cancelled")
	p.waitTrue("no cancelled export yet", `document.querySelectorAll('#exports tbody tr').length === 0 &&
		!document.querySelector('#exports-empty').hidden`)
	p.filterStatus("")
	apply := chromedp.Click(chromedp.CSS(`#filters button[type="submit"]`))
	p.do("filter by owner alice", chromedp.SendKeys(chromedp.ID("owner"), "alice"), apply)
	p.waitRows("alice's exports only", func(rows []dashRow) bool { return slices.Equal(dashIDs(rows), []string{aSlow, aFast}) })
	dashEval[bool](p, `(() => { document.querySelector('#owner').value = ''; return true; })()`)
	p.do("clear the owner", apply)
	p.waitRows("every export again", func(rows []dashRow) bool { return slices.Equal(dashIDs(rows), newestFirst) })

	t.Log("cancel alice's running export")
	p.do("click Cancel", chromedp.Click(chromedp.CSS(`#exports tr[data-id="`+aSlow+`"] button.cancel`)))
	p.waitRows("the row to turn cancelled", func(rows []dashRow) bool {
		r := byID(rows, aSlow)
		return r.Status == "cancelled" && !r.Cancel
	})
	require.Equal(t, exporter.StatusCancelled, s.job(t, aSlow).Status)
	require.Equal(t, exporter.StatusRunning, s.job(t, bSlow).Status, "the other export runs on")
	p.waitTrue("the cancel in the figures", `document.querySelector('#totals [data-total="cancelled"]').textContent === '1'`)

	dashScreenshot(t, p)

	t.Log("lose contact, then recover")
	before := p.live()
	s.down.Store(true)
	p.waitTrue("the page to say it lost contact", `document.querySelector('#live').dataset.state === 'lost' &&
		document.body.classList.contains('stale')`)
	lost := p.live()
	t.Logf("the page says %q", lost)
	require.Contains(t, lost, "Lost contact")
	require.Regexp(t, `last update at \d\d:\d\d:\d\d`, lost)
	at := regexp.MustCompile(`\d\d:\d\d:\d\d`)
	require.Equal(t, at.FindString(before), at.FindString(lost), "the last update is the one the page showed as live")
	require.Len(t, p.rows(), len(newestFirst), "the data stays, marked stale")
	s.down.Store(false)
	p.waitTrue("the page to be live again", `document.querySelector('#live').dataset.state === 'live' &&
		!document.body.classList.contains('stale')`)

	t.Log("a user without the admin permission is refused")
	p.do("log in as alice", chromedp.Navigate(s.url+"/login?user=alice"), chromedp.WaitVisible(chromedp.CSS("h1")))
	title, err = chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "403 Forbidden", title)
	require.Contains(t, dashEval[string](p, `document.body.textContent`), "forbidden")
	require.Zero(t, dashEval[int](p, `document.querySelectorAll('#exports').length`), "no dashboard")
	// The error page's policy lets it fetch nothing: ask from alice's
	// list, a page of the same origin without one.
	p.do("open alice's list", chromedp.Navigate(s.url+"/exports/"))
	status = dashEval[int](p, `fetch('/exports/dashboard/exports').then((r) => r.status)`)
	require.Equal(t, http.StatusForbidden, status)
	status = dashEval[int](p, `fetch('/exports/dashboard/instances').then((r) => r.status)`)
	require.Equal(t, http.StatusForbidden, status)
}

// dashScreenshot takes a PNG of the whole page into the test's artifact
// directory, and with -update-dashboard-screenshot writes it to
// docs/dashboard.png.
func dashScreenshot(t *testing.T, p *dashPage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, dashStep)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	require.NoError(t, err, "screenshot")
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	require.NoError(t, err, "the screenshot should be a PNG")
	path := filepath.Join(t.ArtifactDir(), filepath.Base(dashScreenshotTo))
	require.NoError(t, os.WriteFile(path, img, 0o644))
	t.Logf("screenshot: %s (%dx%d, %d KiB)", path, cfg.Width, cfg.Height, len(img)>>10)
	if !*dashUpdateScreenshot {
		return
	}
	require.LessOrEqual(t, len(img), dashMaxPNG, "the screenshot should be at most %d KiB", dashMaxPNG>>10)
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root should be three levels above the test's directory")
	require.Contains(t, string(mod), "module github.com/exporterkit/exporter\n")
	dst := filepath.Join(root, filepath.FromSlash(dashScreenshotTo))
	require.NoError(t, os.WriteFile(dst, img, 0o644))
	t.Logf("screenshot: updated %s", dst)
}
