package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"

	"github.com/exporterkit/exporter"
)

// The demo login. This is a demo: whoever names a user is that user. A
// real service authenticates the request (a session, a token) and builds
// the exporter.User from what it trusts; exporterhttp asks it through
// Config.Authenticate, as it asks authenticate here.

const (
	// userCookie holds the logged-in user's id.
	userCookie = "exporter_user"
	// adminPermission is the Exporter's Config.AdminPermission: its
	// holders may see, cancel and download every user's exports.
	adminPermission = "exporter:admin"
	// maxLoginBody bounds the body of POST /login.
	maxLoginBody = 4 << 10
)

var validUserID = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// demoUser returns the user id is, with the demo's permissions: "guest"
// has none, "admin" may also see, cancel and download everyone's exports,
// everyone else may export.
func demoUser(id string) exporter.User {
	switch id {
	case "guest":
		return exporter.User{ID: id}
	case "admin":
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission, adminPermission}}
	default:
		return exporter.User{ID: id, Permissions: []string{exporter.DefaultPermission}}
	}
}

// authenticate returns the acting user: the X-User header (for curl),
// else the login cookie. It is the exporterhttp.Config.Authenticate of the
// service. No user, or a malformed one, is an error wrapping
// exporter.ErrUnauthenticated, which exporterhttp answers 401.
func authenticate(r *http.Request) (exporter.User, error) {
	id := r.Header.Get("X-User")
	if id == "" {
		if c, err := r.Cookie(userCookie); err == nil {
			id = c.Value
		}
	}
	if id == "" {
		return exporter.User{}, fmt.Errorf("%w: log in first", exporter.ErrUnauthenticated)
	}
	if !validUserID.MatchString(id) {
		return exporter.User{}, fmt.Errorf("%w: user ids are 1 to 32 of a-z, 0-9, _ and -", exporter.ErrUnauthenticated)
	}
	return demoUser(id), nil
}

// login is POST /login: it sets the login cookie for the user in a JSON
// body {"user": id} or a form field "user", and answers 204, or redirects
// a form post to the page.
func (s *service) login(w http.ResponseWriter, r *http.Request) {
	if err := s.csrf.Check(r); err != nil {
		writeProblem(w, http.StatusForbidden, "cross_origin", "the login is changed only from the service's own origin")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	var id string
	form := false
	switch mediaType(r) {
	case "application/json":
		var body struct {
			User string `json:"user"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeProblem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is larger than %d bytes", tooBig.Limit))
				return
			}
			writeProblem(w, http.StatusBadRequest, "bad_json", `send {"user": "<id>"}`)
			return
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			writeProblem(w, http.StatusBadRequest, "bad_json", "the body has data after its JSON object")
			return
		}
		id = body.User
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(maxLoginBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			writeProblem(w, http.StatusBadRequest, "invalid", "the form cannot be read")
			return
		}
		id, form = r.PostFormValue("user"), true
	default:
		writeProblem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json or a form")
		return
	}
	if !validUserID.MatchString(id) {
		writeProblem(w, http.StatusBadRequest, "invalid", "user must be 1 to 32 of a-z, 0-9, _ and -")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: userCookie, Value: id, Path: "/", MaxAge: 7 * 24 * 3600,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	s.log.InfoContext(r.Context(), "login", "user", id)
	if form {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// logout is POST /logout: it clears the login cookie.
func (s *service) logout(w http.ResponseWriter, r *http.Request) {
	if err := s.csrf.Check(r); err != nil {
		writeProblem(w, http.StatusForbidden, "cross_origin", "the login is changed only from the service's own origin")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: userCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
	if t := mediaType(r); t == "application/x-www-form-urlencoded" || t == "multipart/form-data" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// me is GET /me: the acting user, so that the page can show who is logged
// in (the cookie is HttpOnly) and, to an admin, the link to the operator's
// dashboard.
func (s *service) me(w http.ResponseWriter, r *http.Request) {
	user, err := authenticate(r)
	if err != nil {
		writeProblem(w, http.StatusUnauthorized, "unauthenticated", "log in first")
		return
	}
	perms := user.Permissions
	if perms == nil {
		perms = []string{}
	}
	writeJSON(w, http.StatusOK, me{ID: user.ID, Permissions: perms, Admin: slices.Contains(perms, adminPermission)})
}

// me is the body of GET /me.
type me struct {
	ID          string   `json:"id"`
	Permissions []string `json:"permissions"`
	// Admin is whether the user holds adminPermission: the page then
	// links to the operator's dashboard.
	Admin bool `json:"admin"`
}

func mediaType(r *http.Request) string {
	t, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return t
}
