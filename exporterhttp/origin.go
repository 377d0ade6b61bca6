package exporterhttp

import (
	"net/http"
	"net/url"
	"strings"
)

// errCrossOrigin refuses a write a browser sent from another site's page.
var errCrossOrigin = &apiError{status: http.StatusForbidden, code: "cross_origin", title: "Cross-origin request refused",
	detail: "exports are started and cancelled only from the service's own origin"}

// checkOrigin refuses, with errCrossOrigin, a request that a browser sent
// from a page of another origin: one whose Sec-Fetch-Site is "cross-site",
// or whose Origin header names another host and port than the request's
// Host (the scheme is not compared: a TLS-terminating proxy hides it).
// Requests without these headers (curl, other services) pass: they carry
// no browser's ambient credentials.
func checkOrigin(r *http.Request) error {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return errCrossOrigin
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !sameHost(u.Host, r.Host) { // "null" too
		return errCrossOrigin
	}
	return nil
}

// sameHost compares two host[:port] case-insensitively, a default port
// (80, 443) being the same as none.
func sameHost(a, b string) bool {
	return strings.EqualFold(withoutDefaultPort(a), withoutDefaultPort(b))
}

func withoutDefaultPort(host string) string {
	for _, port := range []string{":80", ":443"} {
		if h, ok := strings.CutSuffix(host, port); ok {
			return h
		}
	}
	return host
}
