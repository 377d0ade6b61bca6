package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
)

// TestLogin logs in with JSON and with a form, exports as the cookie's
// user, and logs out; /me tells the page who is logged in and whether to
// show the admin's link.
func TestLogin(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 0, exporter.Config{})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{
		Transport: in.ts.Client().Transport,
		Jar:       jar,
		// See the redirect of a form login rather than follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(method, path, contentType, body string, headers ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, in.ts.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, data
	}
	whoami := func(headers ...string) (int, me) {
		t.Helper()
		resp, body := do("GET", "/me", "", "", headers...)
		var m me
		if resp.StatusCode == http.StatusOK {
			require.NoError(t, json.Unmarshal(body, &m), "body %s", body)
		} else {
			require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, m
	}

	status, _ := whoami()
	require.Equal(t, http.StatusUnauthorized, status)

	resp, body := do("POST", "/login", "application/json", `{"user": "alice"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "body %s", body)
	cookies := resp.Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	require.Equal(t, userCookie, c.Name)
	require.Equal(t, "alice", c.Value)
	require.Equal(t, "/", c.Path)
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, c.SameSite)

	status, m := whoami()
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, me{ID: "alice", Permissions: []string{exporter.DefaultPermission}}, m)
	// X-User wins over the cookie.
	_, m = whoami("X-User", "bob")
	require.Equal(t, "bob", m.ID)
	_, m = whoami("X-User", "admin")
	require.Equal(t, me{ID: "admin", Permissions: []string{exporter.DefaultPermission, adminPermission}, Admin: true}, m)
	_, m = whoami("X-User", "guest")
	require.Equal(t, me{ID: "guest", Permissions: []string{}}, m)

	// The cookie's user exports, through the API.
	resp, body = do("POST", apiPrefix+"/", "application/json", fmt.Sprintf(`{"kind": %q, "args": {"rows": 5}}`, csvKind))
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	var job exporter.Job
	require.NoError(t, json.Unmarshal(body, &job))
	require.Equal(t, "alice", job.Owner)
	in.waitStatus(t, "alice", job.ID, exporter.StatusCompleted)

	// A form login redirects to the page.
	resp, _ = do("POST", "/login", "application/x-www-form-urlencoded", "user=carol")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"))
	_, m = whoami()
	require.Equal(t, "carol", m.ID)

	resp, _ = do("POST", "/logout", "", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	status, _ = whoami()
	require.Equal(t, http.StatusUnauthorized, status)
}

// TestLoginRefused: what POST /login refuses, as problem documents.
func TestLoginRefused(t *testing.T) {
	t.Parallel()
	in := newInstance(t, 0, exporter.Config{})
	for _, tt := range []struct {
		name, contentType, body string
		headers                 []string
		status                  int
		code                    string
	}{
		{"malformed user", "application/json", `{"user": "Alice Smith"}`, nil, http.StatusBadRequest, "invalid"},
		{"empty user", "application/x-www-form-urlencoded", "user=", nil, http.StatusBadRequest, "invalid"},
		{"unknown member", "application/json", `{"user": "alice", "admin": true}`, nil, http.StatusBadRequest, "bad_json"},
		{"trailing data", "application/json", `{"user": "alice"} {}`, nil, http.StatusBadRequest, "bad_json"},
		{"too large", "application/json", `{"user": "` + strings.Repeat("a", maxLoginBody) + `"}`, nil, http.StatusRequestEntityTooLarge, "too_large"},
		{"not JSON or a form", "text/plain", "alice", nil, http.StatusUnsupportedMediaType, "unsupported_media_type"},
		// What a page of another origin (another port of this host) sends:
		// it must not log the browser in or out.
		{"another origin", "application/x-www-form-urlencoded", "user=mallory",
			[]string{"Origin", "http://127.0.0.1:1", "Sec-Fetch-Site", "same-site"}, http.StatusForbidden, "cross_origin"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := in.call(t, "POST", "/login", "", tt.body, append([]string{"Content-Type", tt.contentType}, tt.headers...)...)
			r.requireProblem(t, tt.status, tt.code)
			require.Empty(t, r.header.Values("Set-Cookie"))
		})
	}
	r := in.call(t, "POST", "/logout", "", "", "Origin", "http://127.0.0.1:1", "Sec-Fetch-Site", "same-site")
	r.requireProblem(t, http.StatusForbidden, "cross_origin")
	require.Empty(t, r.header.Values("Set-Cookie"))
}
