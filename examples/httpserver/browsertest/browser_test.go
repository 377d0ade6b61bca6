package browsertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter/internal/syncbuf"
)

// Window size of the browser, which is also the size of a screenshot.
const (
	windowWidth  = 1200
	windowHeight = 900
)

// browserGone bounds the wait, after the allocator is cancelled, for every
// Chromium process of the test's profile to exit.
const browserGone = 10 * time.Second

// chromiumNames are the names Chromium's binary has, tried in this order:
// Debian's package installs /usr/bin/chromium.
var chromiumNames = []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"}

// browserRequired reports whether the environment demands a real browser:
// EXPORTER_REQUIRE_BROWSER=1 (make test sets it) turns a missing Chromium
// into a failure, never a skip.
func browserRequired() bool {
	return os.Getenv("EXPORTER_REQUIRE_BROWSER") == "1"
}

// chromiumPath returns the path of the Chromium binary, or skips the test
// when there is none (fails it when browserRequired).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range chromiumNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "chromium not found (tried " + strings.Join(chromiumNames, ", ") + "); run `bash scripts/ensure-chromium.sh` as root, or `make test`, which installs it"
	if !browserRequired() {
		t.Skip(msg)
	}
	t.Fatal(msg)
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile and returns a
// chromedp context for one tab of it. The browser runs until the test ends:
// its cleanup closes it, waits for its main process, and then checks that no
// process of the profile (renderers, the GPU and network services) is left.
// Its output goes to the test log when the test fails.
//
// The flags keep Chromium off the network except for the pages the test
// opens: on a closed network its background connections to Google
// (component updates, sync, QUIC probes) are refused and only add noise.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile := t.TempDir()
	var output syncbuf.Buffer
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root in CI, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(windowWidth, windowHeight),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.CombinedOutput(&output),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))

	// Start the browser under a context with no deadline: the first Run binds
	// the browser's life to its context.
	if err := chromedp.Do(ctx); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v\n%s", path, err, output.String())
	}
	t.Cleanup(func() {
		// Close the browser gracefully, bounded; cancelling the allocator
		// then kills what is left of the main process and waits for it.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := chromedp.Cancel(cctx)
		cancel()
		cancelTab()
		cancelAlloc()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close chromium: %v", err)
		}
		if left := waitProfileGone(profile, browserGone); len(left) > 0 {
			t.Errorf("chromium processes %v of profile %s still run %v after the browser closed", left, profile, browserGone)
		}
		if t.Failed() {
			t.Logf("chromium output (without its D-Bus complaints):\n%s", withoutDBus(output.String()))
		}
	})
	return ctx
}

// withoutDBus drops the lines of Chromium's output about D-Bus, which a
// machine without a session bus fills with errors that mean nothing here.
func withoutDBus(out string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "dbus/") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// waitProfileGone waits up to limit until no process runs with the
// --user-data-dir=profile flag, and returns the pids still running then.
// Each profile is a fresh t.TempDir, so the processes found are this test's
// own browser and nothing else; the ones left at the deadline are killed, so
// that a failing test leaves none behind.
func waitProfileGone(profile string, limit time.Duration) []int {
	deadline := time.Now().Add(limit)
	for {
		pids := profileProcesses(profile)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
			return pids
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// profileProcesses returns the pids of the processes whose command line has
// the argument --user-data-dir=profile. It reads /proc, so it finds nothing
// where there is none (off Linux), which only weakens the check.
func profileProcesses(profile string) []int {
	want := []byte("--user-data-dir=" + profile)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
			if bytes.Equal(arg, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// sha256JS is a JavaScript function of a URL: it fetches the URL in the
// page, with the page's cookies, and resolves to {hex, size, status}, the
// SHA-256 (crypto.subtle, so the page must be a secure context, which
// http://127.0.0.1 is) and the length of the body.
const sha256JS = `async (url) => {
	const r = await fetch(url, {credentials: "same-origin"});
	const buf = await r.arrayBuffer();
	const sum = await crypto.subtle.digest("SHA-256", buf);
	const hex = Array.from(new Uint8Array(sum), b => b.toString(16).padStart(2, "0")).join("");
	return {hex: hex, size: buf.byteLength, status: r.status};
}`

// fetchResult is what sha256JS resolves to.
type fetchResult struct {
	Hex    string `json:"hex"`
	Size   int64  `json:"size"`
	Status int    `json:"status"`
}

// fetchSHA256 fetches url inside the page of ctx and returns the digest and
// size of the body as the browser received it.
func fetchSHA256(ctx context.Context, url string) (fetchResult, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[fetchResult](
		"("+sha256JS+")("+strconv.Quote(url)+")", chromedp.EvalAwaitPromise))
}

// TestBrowser proves that the allocator starts Chromium with the test's
// flags, that a page runs script, and that the in-page digest that TestPage
// relies on agrees with Go's: it needs no Redis and no example server.
func TestBrowser(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("id,name\n1,ä\n"), 10_000)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.URL.Path == "/blob" {
			w.Header().Set("Content-Type", "text/csv")
			_, _ = w.Write(body)
			return
		}
		_, _ = io.WriteString(w, `<!doctype html><title>local</title>`)
	}))
	defer ts.Close()

	ctx := newBrowser(t)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	require.NoError(t, chromedp.Do(tctx, chromedp.Navigate(`data:text/html,<title>smoke</title><p id="p">hello</p>`)))
	title, err := chromedp.Run(tctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "smoke", title)
	text, err := chromedp.Run(tctx, chromedp.Text(chromedp.ID("p")))
	require.NoError(t, err)
	require.Equal(t, "hello", text)
	width, err := chromedp.Run(tctx, chromedp.Evaluate[int](`window.innerWidth`))
	require.NoError(t, err)
	require.Equal(t, windowWidth, width)

	require.NoError(t, chromedp.Do(tctx, chromedp.Navigate(ts.URL)))
	got, err := fetchSHA256(tctx, ts.URL+"/blob")
	require.NoError(t, err)
	sum := sha256.Sum256(body)
	require.Equal(t, fetchResult{Hex: hex.EncodeToString(sum[:]), Size: int64(len(body)), Status: http.StatusOK}, got)
}
