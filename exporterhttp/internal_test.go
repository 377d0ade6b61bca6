package exporterhttp

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/exporterkit/exporter"
	"github.com/stretchr/testify/require"
)

func TestSanitizeFilename(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	tests := []struct{ in, want string }{
		{"orders.csv", "orders.csv"},
		{"rapport d'été.csv", "rapport d'été.csv"},
		{"報告.csv", "報告.csv"},
		{"../../etc/passwd", "passwd"},
		{`C:\Users\me\orders.csv`, "orders.csv"},
		{"dir/", ""},
		{"a\x00b\tc\x7f.csv", "a_b_c_.csv"},
		{`<a>:"b"|c?*.csv`, "_a___b__c__.csv"},
		{"evil\u202Etxt.exe", "evil_txt.exe"},
		{"zero\u200bwidth.csv", "zero_width.csv"},
		{"line\u2028sep.csv", "line_sep.csv"},
		{"bad\xffutf8.csv", "bad_utf8.csv"},
		{" .hidden. ", "hidden"},
		{"...", ""},
		{"", ""},
		{long + ".csv", strings.Repeat("x", 251) + ".csv"},
		{long + ".tar.gz", strings.Repeat("x", 252) + ".gz"},
		{long, strings.Repeat("x", 255)},
		{strings.Repeat("é", 200) + ".csv", strings.Repeat("é", 125) + ".csv"},
		{long + "." + long, strings.Repeat("x", 255)},                              // an "extension" of 301 bytes is not one
		{strings.Repeat("a. ", 100) + ".csv", strings.Repeat("a. ", 83) + "a.csv"}, // no dot or space before the extension
	}
	for _, tt := range tests {
		got := sanitizeFilename(tt.in)
		require.Equal(t, tt.want, got, "sanitizeFilename(%q)", tt.in)
		require.LessOrEqual(t, len(got), maxFilename)
		require.True(t, utf8.ValidString(got))
		require.Equal(t, got, sanitizeFilename(got), "idempotent")
	}
}

func TestContentDisposition(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, want string }{
		{"orders.csv", `attachment; filename="orders.csv"; filename*=UTF-8''orders.csv`},
		{"a b;c,d.csv", `attachment; filename="a b;c,d.csv"; filename*=UTF-8''a%20b%3Bc%2Cd.csv`},
		{"100%'s.csv", `attachment; filename="100_'s.csv"; filename*=UTF-8''100%25%27s.csv`},
		{`back\slash.csv`, `attachment; filename="back_slash.csv"; filename*=UTF-8''back%5Cslash.csv`},
		{"報告.csv", `attachment; filename="__.csv"; filename*=UTF-8''%E5%A0%B1%E5%91%8A.csv`},
		{"été.csv", `attachment; filename="_t_.csv"; filename*=UTF-8''%C3%A9t%C3%A9.csv`},
	}
	for _, tt := range tests {
		got := contentDisposition(tt.name)
		require.Equal(t, tt.want, got)
		for _, c := range []byte(got) {
			require.True(t, c >= 0x20 && c < 0x7f, "a header value is printable ASCII: %q", got)
		}
		disposition, params, err := mime.ParseMediaType(got)
		require.NoError(t, err)
		require.Equal(t, "attachment", disposition)
		require.Equal(t, tt.name, params["filename"], "filename* decodes to the name")
	}
	// A name with quotes or controls never reaches contentDisposition
	// unsanitized; sanitized, it parses back to itself.
	for _, raw := range []string{`"quoted".csv`, "new\r\nline: x.csv", "tab\there.csv"} {
		name := sanitizeFilename(raw)
		_, params, err := mime.ParseMediaType(contentDisposition(name))
		require.NoError(t, err, raw)
		require.Equal(t, name, params["filename"])
	}
}

// TestProblemFor checks the status, code and detail of each kind of
// error: every sentinel of the root package, the Handler's own, and
// anything else, whose text is not sent.
func TestProblemFor(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("exporter: op 6b1f: %w: some detail", err) }
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{wrap(exporter.ErrUnauthenticated), 401, "unauthenticated"},
		{wrap(exporter.ErrForbidden), 403, "forbidden"},
		{wrap(exporter.ErrNotFound), 404, "not_found"},
		{wrap(exporter.ErrFinished), 409, "finished"},
		{wrap(exporter.ErrNotReady), 409, "not_completed"},
		{wrap(exporter.ErrInvalid), 400, "invalid"},
		{wrap(exporter.ErrTooLarge), 413, "too_large"},
		{wrap(exporter.ErrBusy), 503, "busy"},
		{wrap(exporter.ErrClosed), 503, "shutting_down"},
		{wrap(errors.ErrUnsupported), 501, "unsupported"},
		{&http.MaxBytesError{Limit: 10}, 413, "too_large"},
		{errCrossOrigin, 403, "cross_origin"},
		{wrap(exporter.ErrCorrupt), 500, "internal"},
		{errors.New("dial tcp 10.0.0.7:6379: connection refused"), 500, "internal"},
		{context.DeadlineExceeded, 500, "internal"},
	}
	for _, tt := range tests {
		p := problemFor(tt.err, &exporter.Job{ID: "x"})
		require.Equal(t, tt.status, p.Status, "%v", tt.err)
		require.Equal(t, tt.code, p.Code, "%v", tt.err)
		require.Equal(t, "https://github.com/exporterkit/exporter/exporterhttp#"+tt.code, p.Type)
		require.NotEmpty(t, p.Title)
		require.NotEmpty(t, p.Detail)
		require.Equal(t, tt.status == 409, p.Export != nil, "only a 409 carries the export")
		if tt.code != "invalid" {
			require.NotContains(t, p.Detail, "some detail", "only ErrInvalid's text is sent")
			require.NotContains(t, p.Detail, "10.0.0.7")
		}
	}
	p := problemFor(fmt.Errorf("%w: %s", exporter.ErrInvalid, strings.Repeat("x", 1000)), nil)
	require.Contains(t, p.Detail, "invalid argument: xxx")
	require.LessOrEqual(t, len(p.Detail), maxDetail)

	rec := httptest.NewRecorder()
	writeProblem(rec, problemFor(exporter.ErrBusy, nil))
	require.Equal(t, "1", rec.Header().Get("Retry-After"))
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
}

func TestEcho(t *testing.T) {
	t.Parallel()
	require.Equal(t, `"abc"`, echo("abc"))
	require.Equal(t, `"a\nb\x00"`, echo("a\nb\x00"))
	got := echo(strings.Repeat("é", 100))
	require.Equal(t, `"`+strings.Repeat("é", 32)+`"…`, got)
	require.Equal(t, `"\xff"`, echo("\xff"), "invalid UTF-8 is escaped")
}

func TestEventIDs(t *testing.T) {
	t.Parallel()
	job := &exporter.Job{Bytes: 2048, Read: 2500, Status: exporter.StatusRunning}
	id := eventID(job)
	require.Equal(t, "2048-2500-running", id)
	s, ok := parseEventID(id)
	require.True(t, ok)
	require.Equal(t, stateOf(job), s)
	require.Equal(t, "0-0-pending", eventID(&exporter.Job{Status: exporter.StatusPending}), "Read is at least Bytes")
	for _, bad := range []string{"", "2048", "running", "2048-running", "x-0-running", "0-x-running",
		"-5-5-running", "5-4-running", "5-5-", "5-5-sleeping", "5-5-running-x"} {
		_, ok := parseEventID(bad)
		require.False(t, ok, bad)
	}
	order := []string{"0-0-pending", "0-0-running", "0-500-running", "1024-1024-running", "1024-1500-running",
		"2048-2048-running", "2048-2048-completed"}
	for i := 1; i < len(order); i++ {
		a, ok := parseEventID(order[i])
		require.True(t, ok, order[i])
		b, _ := parseEventID(order[i-1])
		require.True(t, a.after(b), "%s after %s", order[i], order[i-1])
		require.False(t, b.after(a))
		require.False(t, a.after(a), "a state is not after itself")
	}
	for _, end := range []string{"2048-2048-failed", "2048-2048-cancelled"} {
		a, _ := parseEventID(end)
		b, _ := parseEventID("2048-2048-completed")
		require.False(t, a.after(b), "the terminal statuses are one state")
	}
}

func TestCheckOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host, origin, site string
		refused            bool
	}{
		{"example.com", "", "", false},
		{"example.com", "https://example.com", "", false},
		{"example.com", "http://EXAMPLE.com", "same-origin", false},
		{"example.com:443", "https://example.com", "", false},
		{"example.com", "http://example.com:80", "", false},
		{"localhost:8080", "http://localhost:8080", "", false},
		{"example.com", "", "same-site", false},
		{"example.com", "", "none", false},
		{"example.com", "https://evil.com", "", true},
		{"example.com", "https://example.com.evil.com", "", true},
		{"localhost:8080", "http://localhost:8081", "", true},
		{"localhost:8080", "http://localhost", "", true},
		{"example.com", "null", "", true},
		{"example.com", "::bad", "", true},
		{"example.com", "https://example.com", "cross-site", true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "http://"+tt.host+"/", nil)
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if tt.site != "" {
			r.Header.Set("Sec-Fetch-Site", tt.site)
		}
		err := checkOrigin(r)
		require.Equal(t, tt.refused, err != nil, "%+v", tt)
	}
}

func TestAcceptsHTML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"*/*"}, false},
		{[]string{"application/json"}, false},
		{[]string{"text/*"}, false},
		{[]string{"text/html"}, true},
		{[]string{"TEXT/HTML; charset=utf-8"}, true},
		{[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, true},
		{[]string{"application/json", "text/html;q=0.1"}, true},
		{[]string{"text/html;q=0"}, false},
		{[]string{"text/html;q=0.000"}, false},
		{[]string{"text/html;q=bogus"}, false},
		{[]string{"text/html;;;"}, false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/dashboard", nil)
		for _, v := range tt.accept {
			r.Header.Add("Accept", v)
		}
		require.Equal(t, tt.want, acceptsHTML(r), "Accept: %q", tt.accept)
	}
}
