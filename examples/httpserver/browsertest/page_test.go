package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

var updateScreenshot = flag.Bool("update-screenshot", false,
	"also write TestPage's screenshot to docs/httpserver.png in the repository (or set UPDATE_SCREENSHOT=1)")

const (
	stepTimeout  = 20 * time.Second      // one wait for the page: a login, a status, a progress step
	evalTimeout  = 5 * time.Second       // one evaluation in the page
	pageTimeout  = 3 * time.Minute       // all of TestPage's work in the browser
	pollInterval = 50 * time.Millisecond // between two looks at the page
)

// The exports TestPage starts: a slow one of about 10 s, whose progress can
// be watched and which can be cancelled in time, and a fast one.
const (
	slowRows = 200_000
	slowRate = 20_000 // rows a second
	fastRows = 5000
)

// The screenshot for the README.
const (
	screenshotTo = "docs/httpserver.png" // relative to the repository root
	screenshotAt = 0.25                  // progress of the running export in it, at least
	maxPNG       = 300 << 10             // bytes; it stays small for the README
)

// The page's contract, as far as the test uses it (see the package doc).
const (
	cookieName   = "exporter_user"      // set by POST /login
	exportsItems = "#exports li.export" // every export in the list, newest first
	progressSel  = "progress.progress"  // inside an export's li, and the next four
	statusSpan   = "span.status"
	bytesSpan    = "span.bytes"
	cancelSel    = "button.cancel" // only while pending or running
	downloadSel  = "a.download"    // only when completed
	statusDone   = "completed"     // data-status values
	statusCancel = "cancelled"
	statusRun    = "running"
)

// TestPage drives the example server's page as a person would, in headless
// Chromium, against the real server process on a private redis-server:
// log in, start a slow export and watch its progress bar move, cancel it,
// start a fast one and download it, reload, and see a user without the
// permission get an error. The downloaded bytes are checked three ways: the
// browser's fetch, a plain Go GET and the job's checksum and size. Along the
// way it takes the screenshot for the README, and at the end it stops the
// server with SIGINT while the page is still open and an export runs.
func TestPage(t *testing.T) {
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

	t.Log("start a slow export and watch its progress")
	slow := p.startExport(slowRows, slowRate, "orders-slow.csv")
	p0 := p.progress(slow, -1)
	p1 := p.progress(slow, p0.Value)
	p2 := p.progress(slow, p1.Value)
	t.Logf("progress of %s: %.3f, %.3f, %.3f (%s)", slow, p0.Value, p1.Value, p2.Value, p2.Status)
	require.Less(t, p2.Value, 1.0, "the slow export should still run when its progress was seen twice")
	require.Equal(t, statusRun, p2.Status, "a slow export whose progress moves should be running")
	p.requireParts(slow)

	t.Log("cancel it")
	p.do("click Cancel", chromedp.Click(chromedp.CSS(itemSel(slow)+" "+cancelSel)))
	p.waitCancelled(slow)
	require.Equal(t, statusCancel, srv.getJob(t, "alice", slow).Status, "GET /exports/%s after Cancel", slow)

	t.Log("start a fast export and download it")
	fast := p.startExport(fastRows, 0, "orders-fast.csv")
	done := p.waitCompleted(fast)
	require.Equal(t, "/exports/"+fast+"/download", done.HrefAttr, "href of the download link")
	require.InDelta(t, 1.0, done.Progress, 1e-9, "the progress bar of a completed export should be full")
	job := srv.getJob(t, "alice", fast)
	require.Equal(t, statusDone, job.Status)
	sum, ok := strings.CutPrefix(job.Checksum, "sha256:")
	require.True(t, ok, "checksum %q should be sha256:<hex>", job.Checksum)
	require.Len(t, sum, 64, "checksum %q should be sha256:<64 hex>", job.Checksum)

	goBody := srv.get(t, "alice", "/exports/"+fast+"/download")
	require.NotEmpty(t, goBody)
	require.Equal(t, job.Bytes, int64(len(goBody)), "the Go client's download should have the job's size")
	require.Equal(t, sum, sha256Hex(goBody), "the Go client's download should match the job's checksum")
	fetched := p.fetch(done.Href)
	require.Equal(t, fetchResult{Hex: sum, Size: job.Bytes, Status: 200}, fetched,
		"the browser's download (fetch of the link's href) should be what the Go client got")
	t.Logf("download of %s: %d bytes, sha256:%s, same in the browser and in Go", fast, job.Bytes, sum)

	t.Log("reload: both exports are listed, newest first")
	p.do("reload", chromedp.Reload())
	p.waitWhoami("alice")
	require.Equal(t, []listed{{fast, statusDone}, {slow, statusCancel}}, p.list(2),
		"after a reload the list should show the completed export above the cancelled one")
	p.waitCompleted(fast) // its download link is back

	t.Log("start another slow export for the screenshot: running, completed, cancelled")
	live := p.startExport(slowRows, slowRate, "orders-2026.csv")
	mid := p.progress(live, screenshotAt)
	require.Less(t, mid.Value, 1.0)
	p.screenshot(t.ArtifactDir())

	t.Log("a user without the permission gets an error")
	p.guestCannotStart(browser, srv.URL)

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

// page drives one tab. Its methods fail the test with a snapshot of the
// page when the page does not do what the contract says in time.
type page struct {
	t   *testing.T
	ctx context.Context // the tab's, bounded by pageTimeout
}

// listed is one export in the list: its data-id and data-status.
type listed struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// progressState is an export's progress bar value and status.
type progressState struct {
	Value  float64 `json:"value"`
	Status string  `json:"status"`
}

// completedState is what a completed export's list item shows.
type completedState struct {
	Href     string  `json:"href"`     // the download link's href property, absolute
	HrefAttr string  `json:"hrefAttr"` // its href attribute, as the server wrote it
	Progress float64 `json:"progress"`
}

// polled is what waitFor's wrapper returns from the page.
type polled[T any] struct {
	OK    bool `json:"ok"`
	Value T    `json:"value"`
}

// itemSel returns the CSS selector of the list item of export id.
func itemSel(id string) string {
	return fmt.Sprintf(`#exports li.export[data-id=%q]`, id)
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// do runs actions in the tab, all of them within stepTimeout.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\n%s", what, err, p.snapshot())
	}
}

// eval evaluates expr in the page and decodes its value.
func eval[T any](p *page, what, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, evalTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: %v\n%s", what, err, p.snapshot())
	}
	return v
}

// waitFor evaluates fn, the source of a JavaScript function of no
// arguments, in the page every pollInterval until it returns a truthy value,
// and returns that value decoded into T. It fails the test with the last
// error and a snapshot of the page when stepTimeout passes first. An
// evaluation that fails (during a navigation, say) counts as "not yet".
func waitFor[T any](p *page, what, fn string) T {
	p.t.Helper()
	expr := "(() => { const v = (" + fn + ")(); return v ? {ok: true, value: v} : {ok: false}; })()"
	deadline := time.Now().Add(stepTimeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(p.ctx, evalTimeout)
		r, err := chromedp.Run(ctx, chromedp.Evaluate[polled[T]](expr))
		cancel()
		if err == nil && r.OK {
			return r.Value
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) || p.ctx.Err() != nil {
			p.t.Fatalf("%s: not within %v (last error: %v)\n%s", what, stepTimeout, lastErr, p.snapshot())
		}
		time.Sleep(pollInterval) // the pace of the polling, not an assertion
	}
}

// snapshot returns the parts of the page that the contract names, for an
// error message.
func (p *page) snapshot() string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), evalTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		whoami: document.getElementById("whoami")?.textContent,
		error: document.getElementById("error")?.textContent,
		exports: document.getElementById("exports")?.outerHTML,
	}, null, 1)`))
	if err != nil {
		return fmt.Sprintf("(no snapshot of the page: %v)", err)
	}
	return "page: " + truncate(s, 4000)
}

// fill clears the input with the id and types value into it, as a person
// would, so the page sees its key and input events. (chromedp.SetValue
// cannot clear: it sends "" as an omitted argument, and the input then
// holds "undefined".)
func fill(id, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.ID(id)),
		chromedp.Evaluate[chromedp.Void](`document.getElementById(`+js(id)+`).value = ""`),
		chromedp.SendKeys(chromedp.ID(id), value),
	)
}

// login logs in as user with the login form and waits for #whoami.
func (p *page) login(user string) {
	p.t.Helper()
	p.do("log in as "+user, fill("login-user", user), chromedp.Click(chromedp.ID("login-button")))
	p.waitWhoami(user)
}

// waitWhoami waits until #whoami shows user.
func (p *page) waitWhoami(user string) {
	p.t.Helper()
	waitFor[bool](p, "#whoami shows "+user, `() => {
		const w = document.getElementById(`+js("whoami")+`);
		return !!w && w.textContent.includes(`+js(user)+`);
	}`)
}

// ids returns the data-id of every export in the list, top first.
func (p *page) ids() []string {
	p.t.Helper()
	ids := eval[[]string](p, "read the list", `Array.from(document.querySelectorAll(`+js(exportsItems)+`), li => li.dataset.id)`)
	if ids == nil {
		ids = []string{}
	}
	return ids
}

// list waits until the list has at least n exports and returns them, top
// first.
func (p *page) list(n int) []listed {
	p.t.Helper()
	return waitFor[[]listed](p, fmt.Sprintf("at least %d exports in the list", n), `() => {
		const items = Array.from(document.querySelectorAll(`+js(exportsItems)+`), li => ({id: li.dataset.id, status: li.dataset.status}));
		return items.length >= `+strconv.Itoa(n)+` && items;
	}`)
}

// startExport fills and submits the start form and returns the id of the
// new export, which must appear at the top of the list.
func (p *page) startExport(rows, rate int, filename string) string {
	p.t.Helper()
	before, _ := json.Marshal(p.ids())
	p.do("start an export",
		fill("rows", strconv.Itoa(rows)),
		fill("rate", strconv.Itoa(rate)),
		fill("filename", filename),
		chromedp.Click(chromedp.ID("start-button")),
	)
	id := waitFor[string](p, "the new export at the top of the list", `() => {
		const li = document.querySelector(`+js(exportsItems)+`);
		return !!li && !`+string(before)+`.includes(li.dataset.id) && li.dataset.id;
	}`)
	p.t.Logf("started export %s (%d rows at %d/s, %s)", id, rows, rate, filename)
	return id
}

// progress waits until the progress bar of export id shows more than min
// and returns its value and the export's status.
func (p *page) progress(id string, min float64) progressState {
	p.t.Helper()
	return waitFor[progressState](p, fmt.Sprintf("progress of %s above %g", id, min), `() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		const bar = li && li.querySelector(`+js(progressSel)+`);
		return !!bar && bar.value > `+strconv.FormatFloat(min, 'g', -1, 64)+` && {value: bar.value, status: li.dataset.status};
	}`)
}

// requireParts checks that export id's list item has the parts the
// contract names for a running export.
func (p *page) requireParts(id string) {
	p.t.Helper()
	parts := eval[map[string]bool](p, "read the parts of "+id, `(() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		const has = sel => !!li && !!li.querySelector(sel);
		const bar = li && li.querySelector(`+js(progressSel)+`);
		return {progress: !!bar, progressMax1: !!bar && bar.max === 1, status: has(`+js(statusSpan)+`),
			bytes: has(`+js(bytesSpan)+`), cancel: has(`+js(cancelSel)+`), download: has(`+js(downloadSel)+`)};
	})()`)
	want := map[string]bool{"progress": true, "progressMax1": true, "status": true, "bytes": true, "cancel": true, "download": false}
	require.Equal(p.t, want, parts,
		"parts of a running export's list item (%s)\n%s", id, p.snapshot())
}

// waitCancelled waits until export id shows data-status="cancelled" and no
// visible Cancel button.
func (p *page) waitCancelled(id string) {
	p.t.Helper()
	waitFor[bool](p, id+" cancelled, without a Cancel button", `() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		if (!li || li.dataset.status !== `+js(statusCancel)+`) return false;
		const b = li.querySelector(`+js(cancelSel)+`);
		return !b || !b.checkVisibility();
	}`)
}

// waitCompleted waits until export id shows data-status="completed", a
// visible download link and no visible Cancel button.
func (p *page) waitCompleted(id string) completedState {
	p.t.Helper()
	return waitFor[completedState](p, id+" completed, with a download link", `() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		if (!li || li.dataset.status !== `+js(statusDone)+`) return false;
		const a = li.querySelector(`+js(downloadSel)+`);
		const b = li.querySelector(`+js(cancelSel)+`);
		const bar = li.querySelector(`+js(progressSel)+`);
		return !!a && a.checkVisibility() && (!b || !b.checkVisibility()) &&
			{href: a.href, hrefAttr: a.getAttribute("href"), progress: bar ? bar.value : -1};
	}`)
}

// fetch downloads url inside the page, as its script would, with its
// cookies, and returns the SHA-256 and size of what the browser got.
func (p *page) fetch(url string) fetchResult {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	r, err := fetchSHA256(ctx, url)
	if err != nil {
		p.t.Fatalf("fetch %s in the page: %v\n%s", url, err, p.snapshot())
	}
	return r
}

// screenshot takes a PNG of the whole page, writes it to dir, and with
// -update-screenshot or UPDATE_SCREENSHOT=1 to docs/httpserver.png too.
func (p *page) screenshot(dir string) {
	t := p.t
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	require.NoError(t, err, "screenshot")
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	require.NoError(t, err, "the screenshot should be a PNG")
	path := filepath.Join(dir, filepath.Base(screenshotTo))
	require.NoError(t, os.WriteFile(path, img, 0o644))
	t.Logf("screenshot: %s (%dx%d, %d KiB)", path, cfg.Width, cfg.Height, len(img)>>10)
	if !*updateScreenshot && os.Getenv("UPDATE_SCREENSHOT") != "1" {
		return
	}
	require.LessOrEqual(t, len(img), maxPNG, "the screenshot for the README should be at most %d KiB", maxPNG>>10)
	dst := filepath.Join(repoRoot(t), filepath.FromSlash(screenshotTo))
	require.NoError(t, os.WriteFile(dst, img, 0o644))
	t.Logf("screenshot: updated %s", dst)
}

// guestCannotStart logs in as guest in a tab of its own browser context
// (its own cookies), submits the start form, and checks that #error shows
// an error and that no export appears.
func (p *page) guestCannotStart(browser context.Context, url string) {
	t := p.t
	t.Helper()
	tab, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancelTab()
	// Open the tab under a context with no deadline: the first Run binds
	// the tab's life to its context.
	require.NoError(t, chromedp.Do(tab))
	ctx, cancel := context.WithTimeout(tab, stepTimeout*3)
	defer cancel()
	g := &page{t: t, ctx: ctx}

	g.do("open "+url+" as a new visitor", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	g.login("guest")
	// Clear any earlier message (a list the guest may not read, say), so
	// that the one checked below comes from the start.
	eval[chromedp.Void](g, "clear #error", `(() => { const e = document.getElementById(`+js("error")+`); if (e) e.textContent = ""; })()`)
	g.do("start an export as guest",
		fill("rows", "1000"),
		fill("rate", "0"),
		fill("filename", "not-allowed.csv"),
		chromedp.Click(chromedp.ID("start-button")),
	)
	msg := waitFor[string](g, "#error shows why the guest may not start an export", `() => {
		const e = document.getElementById(`+js("error")+`);
		return !!e && e.checkVisibility() && e.textContent.trim();
	}`)
	t.Logf("guest sees the error %q", msg)
	require.Empty(t, g.ids(), "the guest's failed start should list no export")
}

// collectExceptions records the uncaught exceptions of the page from now
// on; the returned func lists them so far.
func (p *page) collectExceptions() func() []string {
	var (
		mu   sync.Mutex
		seen []string
	)
	messages := chromedp.Console(p.ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return // the tab's context ended
			}
			if m.IsException() {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s:%d: %s", m.URL, m.Line+1, m.Text))
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}
