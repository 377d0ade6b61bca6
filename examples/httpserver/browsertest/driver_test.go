package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// The page's contract, as far as the tests use it: the element ids of the
// forms (#login-form, #login-user, #login-button, #whoami, #kind, #rows,
// #rate, #filename, #start-button, #error, #admin-tools, #dashboard-link)
// and, for each export in the list, these.
const (
	exportsItems = "#exports li.export" // every export in the list, newest first; data-id, data-status, data-read, data-stored, data-contact
	progressSel  = "progress.progress"  // inside an export's li, and the next four
	statusSpan   = "span.status"        // the status, or "reconnecting…" out of contact
	bytesSpan    = "span.bytes"         // the bytes read and stored, in IEC units
	contactSel   = "div.contact"        // "Reconnecting… last contact HH:MM:SS; ..." out of contact, else empty
	cancelSel    = "button.cancel"      // only while pending or running; disabled out of contact
	downloadSel  = "a.download"         // only when completed
	statusDone   = "completed"          // data-status values
	statusCancel = "cancelled"
	statusRun    = "running"
)

// The kinds the server offers (the values of #kind).
const (
	kindCSV     = "csv"         // rows at a chosen rate
	kindTrickle = "csv-trickle" // 2 KiB every 100 ms
)

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
		admin: !document.getElementById("admin-tools")?.hidden,
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

// startForm is the actions that fill and submit the start form: the
// kind, rows, the rate when the kind takes one, and the file name.
func startForm(kind string, rows, rate int, filename string) []chromedp.Action[chromedp.Void] {
	actions := []chromedp.Action[chromedp.Void]{
		chromedp.WaitVisible(chromedp.ID("kind")),
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("kind"); s.value = ` + js(kind) +
			`; s.dispatchEvent(new Event("change")); })()`),
		fill("rows", strconv.Itoa(rows)),
	}
	if kind == kindCSV {
		actions = append(actions, fill("rate", strconv.Itoa(rate)))
	}
	return append(actions, fill("filename", filename), chromedp.Click(chromedp.ID("start-button")))
}

// startExport fills and submits the start form and returns the id of the
// new export, which must appear at the top of the list.
func (p *page) startExport(kind string, rows, rate int, filename string) string {
	p.t.Helper()
	before, _ := json.Marshal(p.ids())
	p.do("start an export", startForm(kind, rows, rate, filename)...)
	id := waitFor[string](p, "the new export at the top of the list", `() => {
		const li = document.querySelector(`+js(exportsItems)+`);
		return !!li && !`+string(before)+`.includes(li.dataset.id) && li.dataset.id;
	}`)
	p.t.Logf("started export %s (%s, %d rows at %d/s, %s)", id, kind, rows, rate, filename)
	return id
}

// item is what an export's list item shows.
type item struct {
	Status     string `json:"status"`     // data-status
	StatusText string `json:"statusText"` // the text of the status badge
	Read       int64  `json:"read"`       // data-read
	Stored     int64  `json:"stored"`     // data-stored
	Bytes      string `json:"bytes"`      // the text of span.bytes
	Contact    string `json:"contact"`    // data-contact: "ok" or "lost"
	Message    string `json:"message"`    // the text of div.contact
	// Age is how long ago the last contact in Message was, in seconds, by
	// the page's clock; -1 when Message has no time.
	Age            int  `json:"age"`
	CancelVisible  bool `json:"cancelVisible"`
	CancelDisabled bool `json:"cancelDisabled"`
}

// itemJS is a JavaScript function of an li that returns its item.
const itemJS = `(li) => {
	const text = sel => (li.querySelector(sel)?.textContent || "").trim();
	const message = text(` + "`" + contactSel + "`" + `);
	const m = message.match(/last contact (\d\d):(\d\d):(\d\d)/);
	let age = -1;
	if (m) {
		const now = new Date();
		const secs = now.getHours() * 3600 + now.getMinutes() * 60 + now.getSeconds();
		age = ((secs - (Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]))) % 86400 + 86400) % 86400;
	}
	const cancel = li.querySelector(` + "`" + cancelSel + "`" + `);
	return {status: li.dataset.status, statusText: text(` + "`" + statusSpan + "`" + `),
		read: Number(li.dataset.read), stored: Number(li.dataset.stored), bytes: text(` + "`" + bytesSpan + "`" + `),
		contact: li.dataset.contact, message, age,
		cancelVisible: !!cancel && cancel.checkVisibility(), cancelDisabled: !!cancel && cancel.disabled};
}`

// waitItem waits until the item of export id satisfies cond, the source
// of a JavaScript condition on it (it), and returns it.
func (p *page) waitItem(id, what, cond string) item {
	p.t.Helper()
	return waitFor[item](p, id+": "+what, `() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		if (!li) return false;
		const it = (`+itemJS+`)(li);
		return (`+cond+`) && it;
	}`)
}

// readMovesInsideAChunk waits until the bytes read that export id shows
// have taken two values above 0 while the bytes stored it shows were 0,
// and returns the texts shown. It fails the test if the stored bytes move
// first.
func (p *page) readMovesInsideAChunk(id string) []string {
	p.t.Helper()
	type seen struct {
		Shown  []string `json:"shown"`
		Stored int64    `json:"stored"`
	}
	s := waitFor[seen](p, id+": the bytes read move twice while none is stored", `() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		if (!li) return false;
		const all = (window.__readSeen ||= {});
		const shown = (all[`+js(id)+`] ||= []);
		if (li.dataset.stored !== "0") return {shown, stored: Number(li.dataset.stored)};
		const text = li.querySelector(`+js(bytesSpan)+`).textContent;
		if (Number(li.dataset.read) > 0 && !shown.includes(text)) shown.push(text);
		return shown.length >= 2 && {shown, stored: 0};
	}`)
	require.Zero(p.t, s.Stored, "a chunk was stored before the bytes read moved twice inside it (shown: %q)\n%s", s.Shown, p.snapshot())
	return s.Shown
}

// lastContactRE is what an export out of contact says.
var lastContactRE = regexp.MustCompile(`^Reconnecting… last contact \d\d:\d\d:\d\d\b`)

// requireLost checks that it is the item of an export the page has lost
// contact with: it says so, with the time of the last contact within
// maxAge seconds, shows no live status, and its Cancel cannot be clicked.
func (p *page) requireLost(it item, maxAge int) {
	p.t.Helper()
	require.Equal(p.t, "lost", it.Contact, "%+v", it)
	require.Equal(p.t, "reconnecting…", it.StatusText, "the status badge of an export out of contact")
	require.Regexp(p.t, lastContactRE, it.Message)
	require.True(p.t, it.Age >= 0 && it.Age <= maxAge, "last contact %d s ago, want at most %d: %q", it.Age, maxAge, it.Message)
	require.True(p.t, it.CancelVisible && it.CancelDisabled, "Cancel of an export out of contact is shown disabled: %+v", it)
}

// requireParts checks that export id's list item has the parts the
// contract names for a running export in contact with the server.
func (p *page) requireParts(id string) {
	p.t.Helper()
	parts := eval[map[string]bool](p, "read the parts of "+id, `(() => {
		const li = document.querySelector(`+js(itemSel(id))+`);
		const has = sel => !!li && !!li.querySelector(sel);
		const bar = li && li.querySelector(`+js(progressSel)+`);
		const cancel = li && li.querySelector(`+js(cancelSel)+`);
		return {progress: !!bar, progressMax1: !!bar && bar.max === 1, status: has(`+js(statusSpan)+`),
			bytes: has(`+js(bytesSpan)+`), cancel: !!cancel && cancel.checkVisibility() && !cancel.disabled,
			download: has(`+js(downloadSel)+`), contact: !!li && li.dataset.contact === "ok"};
	})()`)
	want := map[string]bool{"progress": true, "progressMax1": true, "status": true, "bytes": true, "cancel": true,
		"download": false, "contact": true}
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

// screenshot takes a PNG of the whole page, writes it to the test's
// artifact directory as httpserver.png, and with -update-screenshot or
// UPDATE_SCREENSHOT=1 to docs/httpserver.png too.
func (p *page) screenshot() {
	t := p.t
	t.Helper()
	img := p.artifact(filepath.Base(screenshotTo))
	if !*updateScreenshot && os.Getenv("UPDATE_SCREENSHOT") != "1" {
		return
	}
	require.LessOrEqual(t, len(img), maxPNG, "the screenshot for the README should be at most %d KiB", maxPNG>>10)
	dst := filepath.Join(repoRoot(t), filepath.FromSlash(screenshotTo))
	require.NoError(t, os.WriteFile(dst, img, 0o644))
	t.Logf("screenshot: updated %s", dst)
}

// artifact takes a PNG of the whole page, writes it to the test's
// artifact directory (go test -artifacts keeps it) as name, and returns
// it.
func (p *page) artifact(name string) []byte {
	t := p.t
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	require.NoError(t, err, "screenshot")
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	require.NoError(t, err, "the screenshot should be a PNG")
	path := filepath.Join(t.ArtifactDir(), name)
	require.NoError(t, os.WriteFile(path, img, 0o644))
	t.Logf("screenshot: %s (%dx%d, %d KiB)", path, cfg.Width, cfg.Height, len(img)>>10)
	return img
}

// newVisitor opens url in a tab of its own browser context (its own
// cookies) of browser, for at most limit, and returns its page; the tab
// closes when the test ends.
func newVisitor(t *testing.T, browser context.Context, url string, limit time.Duration) *page {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancelTab)
	// Open the tab under a context with no deadline: the first Run binds
	// the tab's life to its context.
	require.NoError(t, chromedp.Do(tab))
	ctx, cancel := context.WithTimeout(tab, limit)
	t.Cleanup(cancel)
	v := &page{t: t, ctx: ctx}
	v.do("open "+url+" as a new visitor", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	return v
}

// guestCannotStart logs in as guest as a new visitor, submits the start
// form, and checks that #error shows an error and that no export appears.
func guestCannotStart(t *testing.T, browser context.Context, url string) {
	t.Helper()
	g := newVisitor(t, browser, url, stepTimeout*3)
	g.login("guest")
	// Clear any earlier message (a list the guest may not read, say), so
	// that the one checked below comes from the start.
	eval[chromedp.Void](g, "clear #error", `(() => { const e = document.getElementById(`+js("error")+`); if (e) e.textContent = ""; })()`)
	g.do("start an export as guest", startForm(kindCSV, 1000, 0, "not-allowed.csv")...)
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

// itoa writes n for a JavaScript condition.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
