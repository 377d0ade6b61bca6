package browsertest

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter/examples/httpserver/internal/dataset"
)

var updateScreenshot = flag.Bool("update-screenshot", false,
	"also write TestPage's screenshot to docs/httpserver.png in the repository (or set UPDATE_SCREENSHOT=1)")

const (
	stepTimeout  = 20 * time.Second      // one wait for the page: a login, a status, a progress step
	evalTimeout  = 5 * time.Second       // one evaluation in the page
	pageTimeout  = 3 * time.Minute       // all of a test's work in the browser
	pollInterval = 50 * time.Millisecond // between two looks at the page
)

// The exports TestPage starts: a trickle, whose first chunk takes about
// 3 s, and which runs for minutes unless cancelled; a fast CSV, whose
// download is checked; a slow CSV for the screenshot.
const (
	trickleRows = 100_000
	fastRows    = 5000
	slowRows    = 200_000
	slowRate    = 20_000 // rows a second
)

// The screenshot for the README.
const (
	screenshotTo = "docs/httpserver.png" // relative to the repository root
	maxPNG       = 300 << 10             // bytes; it stays small for the README
)

// cookieName is the login cookie that POST /login sets.
const cookieName = "exporter_user"

// TestPage drives the example server's page as a person would, in headless
// Chromium, against the real server process on a private redis-server:
// log in, start a trickle and watch the bytes read move inside its first
// chunk, cancel it, start a fast export and download it, reload, log in as
// the admin, and see a user without the permission get an error. The
// downloaded bytes are checked against what the kind's source makes, three
// ways: the browser's fetch, a plain Go GET and the job's checksum and
// size. Along the way it takes the screenshot for the README, and at the
// end it stops the server with SIGINT while the page is still open and an
// export runs.
func TestPage(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t) // first: it skips the test soonest when Chromium is missing
	redisAddr := startRedis(t)
	bin := buildServer(t)
	srv := startServer(t, bin, redisAddr) // stopped before Redis, by cleanups' LIFO order
	ctx, cancel := context.WithTimeout(browser, pageTimeout)
	defer cancel()
	p := &page{t: t, ctx: ctx}
	exceptions := p.collectExceptions()

	t.Log("open the page and log in as alice")
	p.do("open "+srv.URL, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	p.login("alice")
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL + "/"}})
	require.NoError(t, err)
	var names []string
	for _, c := range cookies.Cookies {
		names = append(names, c.Name)
	}
	require.Contains(t, names, cookieName, "POST /login should set the cookie %s", cookieName)
	require.False(t, eval[bool](p, "#admin-tools", `document.getElementById("admin-tools").checkVisibility()`),
		"alice is no admin: no link to the operator's dashboard")

	t.Log("start a trickle and watch the bytes read move inside its first chunk")
	trickle := p.startExport(kindTrickle, trickleRows, 0, "orders-trickle.csv")
	shown := p.readMovesInsideAChunk(trickle)
	t.Logf("shown while no byte was stored: %q", shown)
	for _, s := range shown {
		require.Regexp(t, `^\d+\.\d (KiB|MiB) of \d+\.\d (KiB|MiB) read · 0 B stored$`, s, "IEC units, the bytes read of the total, and stored")
	}
	it := p.waitItem(trickle, "running", `it.status === "running"`)
	require.Equal(t, statusRun, it.StatusText)
	p.requireParts(trickle)
	j := srv.getJob(t, "alice", trickle)
	require.Equal(t, kindTrickle, j.Kind)
	require.Greater(t, j.ChunkSize, int64(0))

	t.Log("cancel it")
	p.do("click Cancel", chromedp.Click(chromedp.CSS(itemSel(trickle)+" "+cancelSel)))
	p.waitCancelled(trickle)
	require.Equal(t, statusCancel, srv.getJob(t, "alice", trickle).Status, "GET /exports/%s after Cancel", trickle)

	t.Log("start a fast export and download it")
	fast := p.startExport(kindCSV, fastRows, 0, "orders-fast.csv")
	done := p.waitCompleted(fast)
	require.Equal(t, apiPrefix+"/"+fast+"/download", done.HrefAttr, "href of the download link")
	require.InDelta(t, 1.0, done.Progress, 1e-9, "the progress bar of a completed export should be full")
	want := dataset.Bytes(fastRows) // what the kind's source makes
	wantSum := sha256Hex(want)
	job := srv.getJob(t, "alice", fast)
	require.Equal(t, statusDone, job.Status)
	require.Equal(t, "sha256:"+wantSum, job.Checksum, "the job's checksum is that of the source's bytes")
	require.Equal(t, int64(len(want)), job.Bytes)

	goBody := srv.get(t, "alice", apiPrefix+"/"+fast+"/download")
	require.Equal(t, want, goBody, "the Go client's download should be the source's bytes")
	fetched := p.fetch(done.Href)
	require.Equal(t, fetchResult{Hex: wantSum, Size: int64(len(want)), Status: 200}, fetched,
		"the browser's download (fetch of the link's href) should be the source's bytes")
	t.Logf("download of %s: %d bytes, sha256:%s, the source's, in the browser and in Go", fast, len(want), wantSum)

	t.Log("reload: both exports are listed, newest first")
	p.do("reload", chromedp.Reload())
	p.waitWhoami("alice")
	require.Equal(t, []listed{{fast, statusDone}, {trickle, statusCancel}}, p.list(2),
		"after a reload the list should show the completed export above the cancelled one")
	p.waitCompleted(fast) // its download link is back

	t.Log("start a slow export for the screenshot: running, completed, cancelled")
	live := p.startExport(kindCSV, slowRows, slowRate, "orders-2026.csv")
	p.waitItem(live, "running, with bytes read", `it.status === "running" && it.read > 0`)
	p.screenshot()

	t.Log("the admin sees its own exports here, and the link to the operator's dashboard")
	adminSeesOwnExports(t, browser, srv.URL)

	t.Log("a user without the permission gets an error")
	guestCannotStart(t, browser, srv.URL)

	// Only up to here: once the server is gone, the page's requests fail.
	for _, e := range exceptions() {
		t.Errorf("uncaught exception in the page: %s", e)
	}

	// The page is still open, with its event stream, and an export runs:
	// the server must still shut down cleanly and in time on SIGINT.
	t.Log("stop the server while the page is open and an export runs")
	start := time.Now()
	srv.stop(t)
	t.Logf("server exited 0 %v after SIGINT", time.Since(start).Round(time.Millisecond))
}

// adminSeesOwnExports logs in as admin as a new visitor, starts an export,
// and checks that after a reload the list holds that export alone (the
// page lists the user's own exports, an admin's too) and that the page
// links to the operator's dashboard, which exporterhttp will serve under
// the API's prefix.
func adminSeesOwnExports(t *testing.T, browser context.Context, url string) {
	t.Helper()
	a := newVisitor(t, browser, url, stepTimeout*4)
	a.login("admin")
	link := waitFor[string](a, "#admin-tools visible, with its link", `() => {
		const tools = document.getElementById("admin-tools");
		return !!tools && tools.checkVisibility() && document.getElementById("dashboard-link").getAttribute("href");
	}`)
	require.Equal(t, apiPrefix+"/dashboard", link)
	own := a.startExport(kindCSV, 100, 0, "admin.csv")
	a.waitCompleted(own)
	a.do("reload", chromedp.Reload())
	a.waitWhoami("admin")
	require.Equal(t, []listed{{own, statusDone}}, a.list(1), "the admin's list is its own exports")
	require.NotContains(t, strings.ToLower(eval[string](a, "the page's text", `document.body.innerText`)), "everyone",
		"no hint that the page shows everyone's exports")
}
