// Package browsertest holds the end-to-end tests of the page that the
// example server (examples/httpserver) serves: they build the server, run it
// as real processes against a private redis-server, and drive its page in
// headless Chromium with chromedp. TestPage runs one instance;
// TestPageLosesContact runs two behind a reverse proxy on 127.0.0.1 that
// the test holds silent, whose instance it kills (SIGKILL, by pid), and
// which it switches to the other instance, to see the page say it lost
// contact and recover. TestDashboard runs exporterhttp's operator dashboard
// in the test process, on a private redis-server, as an admin (every
// owner's exports, filters, progress, cancel, the instances' figures, lost
// contact) and as a user, who is refused.
//
// It is a module of its own so that the library's go.mod never requires
// chromedp. `go test ./...` at the repository root does not enter it; `make
// test` runs it explicitly, after scripts/ensure-chromium.sh has installed
// Chromium:
//
//	cd examples/httpserver/browsertest
//	EXPORTER_REQUIRE_REDIS=1 EXPORTER_REQUIRE_BROWSER=1 go test -race -count=1 ./...
//
// Without Chromium (or redis-server) the tests skip, unless the environment
// sets EXPORTER_REQUIRE_BROWSER=1 (or EXPORTER_REQUIRE_REDIS=1), as make test
// does. `make screenshot` runs TestPage with -update-screenshot, which writes
// the picture of the page to docs/httpserver.png, and TestDashboard with
// -update-dashboard-screenshot, which writes docs/dashboard.png.
package browsertest
