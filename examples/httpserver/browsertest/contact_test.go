package browsertest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// The flags of the instances of TestPageLosesContact: a heartbeat every
// second, so that the page takes a silent stream as lost after 3 s
// (two heartbeats and a second), and a lease of 2 s, so that an export of
// the instance that is killed is resumed by the other soon after.
var contactFlags = []string{"-heartbeat", "1s", "-lease", "2s"}

// TestPageLosesContact checks that the page tells the truth when it loses
// contact with the server, and recovers. Two instances of the server run
// on one redis-server behind a reverse proxy, through which the page is
// served. While the page follows a running export:
//
//   - the proxy goes silent (it holds the stream open and forwards
//     nothing): within the heartbeat bound the page shows the export as
//     "reconnecting… last contact HH:MM:SS" with Cancel disabled, and once
//     the proxy forwards again, it is in contact and the progress moves;
//   - the instance the proxy points to is killed (SIGKILL): the page shows
//     the export out of contact, and stays so while the proxy has no
//     instance to forward to; the proxy is switched to the other instance,
//     and the page re-reads the export's status, follows it again, and its
//     progress moves again. Cancel then works.
func TestPageLosesContact(t *testing.T) {
	t.Parallel()
	browser := newBrowser(t)
	redisAddr := startRedis(t)
	bin := buildServer(t)
	a := startServer(t, bin, redisAddr, contactFlags...)
	b := startServer(t, bin, redisAddr, contactFlags...)
	px := startProxy(t, a.URL) // closed first, by cleanups' LIFO order
	ctx, cancel := context.WithTimeout(browser, pageTimeout)
	defer cancel()
	p := &page{t: t, ctx: ctx}
	exceptions := p.collectExceptions()

	t.Logf("open the page through the proxy %s, to instance A %s (B is %s)", px.URL, a.URL, b.URL)
	p.do("open "+px.URL, chromedp.Navigate(px.URL+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	p.login("alice")
	id := p.startExport(kindTrickle, trickleRows, 0, "orders-contact.csv")
	it := p.waitItem(id, "running, with bytes read", `it.status === "running" && it.read > 0 && it.contact === "ok"`)
	p.requireParts(id)

	t.Log("the proxy goes silent: the page loses contact within the heartbeat bound")
	px.hold()
	held := time.Now()
	it = p.waitItem(id, "out of contact", `it.contact === "lost"`)
	t.Logf("out of contact %v after the proxy went silent: %q", time.Since(held).Round(100*time.Millisecond), it.Message)
	p.requireLost(it, 10)
	require.Equal(t, statusRun, it.Status, "the last status known is kept, as from then")

	t.Log("the proxy forwards again: the page is back in contact, and the progress moves")
	before := it.Read
	px.release()
	it = p.waitItem(id, "in contact, moving", `it.contact === "ok" && it.read > `+itoa(before))
	require.Equal(t, statusRun, it.StatusText)
	require.Empty(t, it.Message)
	p.requireParts(id)

	t.Log("kill instance A, the proxy's target")
	it = p.waitItem(id, "in contact", `it.contact === "ok"`)
	p.waitItem(id, "moving", `it.read > `+itoa(it.Read)) // the stream is live again
	a.kill(t)
	killed := time.Now()
	it = p.waitItem(id, "out of contact", `it.contact === "lost"`)
	t.Logf("out of contact %v after the kill: %q", time.Since(killed).Round(100*time.Millisecond), it.Message)
	p.requireLost(it, 10)
	p.artifact("lost.png")
	// The proxy has no instance to forward to: the page keeps trying and
	// stays out of contact. Wait until it has tried twice through the
	// proxy, which answers 502.
	mark := len(px.requests())
	waitRequests(t, px, mark, 2, "GET "+apiPrefix+"/"+id)
	it = p.waitItem(id, "still out of contact", `it.contact === "lost"`)
	p.requireLost(it, 60)

	t.Log("switch the proxy to instance B: the page re-reads the status and recovers")
	lost := it
	mark = len(px.requests())
	px.switchTo(t, b.URL)
	it = p.waitItem(id, "in contact again", `it.contact === "ok"`)
	// The status read, then the stream, both from B.
	waitRequests(t, px, mark, 1, "GET "+apiPrefix+"/"+id)
	waitRequests(t, px, mark, 1, "GET "+apiPrefix+"/"+id+"/events")
	require.Contains(t, []string{statusRun, statusDone}, it.StatusText, "%+v", it)
	require.Empty(t, it.Message)
	// B resumes the export once A's lease lapses (2 s): the bytes read
	// move again, past what the page showed when it lost contact.
	it = p.waitItem(id, "moving again (B runs it)", `it.contact === "ok" && (it.read > `+itoa(lost.Read)+` || it.status === "completed")`)
	t.Logf("recovered: %s, %q", it.StatusText, it.Bytes)
	job := b.getJob(t, "alice", id)
	require.Contains(t, []string{statusRun, statusDone}, job.Status)

	t.Log("Cancel works through B")
	p.requireParts(id)
	p.do("click Cancel", chromedp.Click(chromedp.CSS(itemSel(id)+" "+cancelSel)))
	p.waitCancelled(id)
	require.Equal(t, statusCancel, b.getJob(t, "alice", id).Status)

	for _, e := range exceptions() {
		t.Errorf("uncaught exception in the page: %s", e)
	}
}

// waitRequests waits until the proxy has forwarded at least n requests
// "want" since the mark (a count of its requests).
func waitRequests(t *testing.T, px *proxy, mark, n int, want string) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		seen := px.requests()[mark:]
		count := 0
		for _, r := range seen {
			if r == want {
				count++
			}
		}
		if count >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy forwarded %d of %d requests %q within %v; since the mark: %q",
				count, n, want, stepTimeout, slices.Compact(seen))
		}
		time.Sleep(pollInterval) // the pace of the polling, not an assertion
	}
}
