package exporterhttp_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
	"github.com/stretchr/testify/require"
)

// TestStart checks POST /: 201 with the job and its Location, the args
// given to the Source as sent, the metadata and filename stored, and the
// export running to completion.
func TestStart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		rep := e.request(t, http.MethodPost, "/", "alice",
			`{"kind":"csv","args":{"rows": 3},"filename":"orders.csv","metadata":{"content-type":"text/csv","month":"2026-11"}}`)
		require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
		job := decodeJob(t, rep)
		require.Equal(t, "/exports/"+job.ID, rep.header.Get("Location"))
		require.Equal(t, "alice", job.Owner)
		require.Equal(t, "csv", job.Kind)
		require.JSONEq(t, `{"rows": 3}`, string(job.Args))
		stored, err := e.exp.GetExportStatus(t.Context(), exporter.User{ID: "alice"}, job.ID)
		require.NoError(t, err)
		require.Equal(t, `{"rows": 3}`, string(stored.Args), "args are passed as sent")
		require.Equal(t, map[string]string{"filename": "orders.csv", "content-type": "text/csv", "month": "2026-11"}, job.Metadata)
		require.Contains(t, []exporter.Status{exporter.StatusPending, exporter.StatusRunning, exporter.StatusCompleted}, job.Status)

		rep = e.request(t, http.MethodGet, strings.TrimPrefix(rep.header.Get("Location"), "/exports"), "alice", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, job.ID, decodeJob(t, rep).ID)

		done := e.wait(t, "alice", job.ID)
		require.Equal(t, exporter.StatusCompleted, done.Status, done.Error)
		sum := sha256.Sum256(csvData(3))
		require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), done.Checksum)
		got := decodeJob(t, e.request(t, http.MethodGet, "/"+job.ID, "alice", ""))
		require.Equal(t, exporter.StatusCompleted, got.Status)
		require.Equal(t, int64(len(csvData(3))), got.Bytes)
		require.Equal(t, []string{job.ID}, e.listIDs(t, "alice"))
	})
}

// TestStartBadBody checks that a POST whose body is malformed, of an
// unknown kind, too large or beyond the metadata limits is refused with
// its code, names no Go type, echoes at most a bounded part of the
// request, and starts nothing.
func TestStartBadBody(t *testing.T) {
	long := strings.Repeat("k", 5000)
	md := make(map[string]string)
	for i := range exporter.MaxMetadataEntries + 1 {
		md[fmt.Sprint("k", i)] = "v"
	}
	tooMany, err := json.Marshal(map[string]any{"kind": "csv", "metadata": md})
	require.NoError(t, err)
	tests := []struct {
		name, body, contentType string
		status                  int
		code                    string
		detail                  string // in the detail, if not ""
	}{
		{"empty", "", "", http.StatusBadRequest, "bad_json", "empty"},
		{"truncated", `{"kind":`, "", http.StatusBadRequest, "bad_json", ""},
		{"syntax", `{"kind": csv}`, "", http.StatusBadRequest, "bad_json", "malformed JSON"},
		{"array", `[1,2]`, "", http.StatusBadRequest, "bad_json", "JSON object"},
		{"null", `null`, "", http.StatusBadRequest, "bad_json", "JSON object"},
		{"string", `"csv"`, "", http.StatusBadRequest, "bad_json", "JSON object"},
		{"trailing data", `{"kind":"csv"} {}`, "", http.StatusBadRequest, "bad_json", "after"},
		{"kind not a string", `{"kind": 5}`, "", http.StatusBadRequest, "bad_json", `"kind"`},
		{"filename not a string", `{"kind":"csv","filename":["a"]}`, "", http.StatusBadRequest, "bad_json", `"filename"`},
		{"metadata not strings", `{"kind":"csv","metadata":{"a":1}}`, "", http.StatusBadRequest, "bad_json", `"metadata"`},
		{"metadata an array", `{"kind":"csv","metadata":[]}`, "", http.StatusBadRequest, "bad_json", `"metadata"`},
		{"unknown member", `{"kind":"csv","rows":3}`, "", http.StatusBadRequest, "bad_json", `"rows"`},
		{"long unknown member", `{"kind":"csv","` + long + `":3}`, "", http.StatusBadRequest, "bad_json", `"kkk`},
		{"no kind", `{"args":{"rows":1}}`, "", http.StatusBadRequest, "unknown_kind", `"csv", "gate"`},
		{"unknown kind", `{"kind":"pdf"}`, "", http.StatusBadRequest, "unknown_kind", `"pdf"`},
		{"kind the exporter has", `{"kind":"secret","args":{"rows":1}}`, "", http.StatusBadRequest, "unknown_kind", `"secret"`},
		{"long kind", `{"kind":"` + long + `"}`, "", http.StatusBadRequest, "unknown_kind", `"kkk`},
		{"body too large", `{"kind":"csv","args":"` + strings.Repeat("a", exporter.MaxArgs+16<<10) + `"}`, "",
			http.StatusRequestEntityTooLarge, "too_large", "body"},
		{"args too large", `{"kind":"csv","args":"` + strings.Repeat("a", exporter.MaxArgs) + `"}`, "",
			http.StatusRequestEntityTooLarge, "too_large", "args"},
		{"too many metadata", string(tooMany), "", http.StatusBadRequest, "invalid", "metadata"},
		{"metadata value too long", `{"kind":"csv","metadata":{"note":"` + strings.Repeat("n", exporter.MaxMetadataValue+1) + `"}}`, "",
			http.StatusBadRequest, "invalid", "metadata"},
		{"text body", `{"kind":"csv"}`, "text/plain", http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json"},
		{"form body", `kind=csv`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
	}
	forEachBackend(t, func(t *testing.T, e *env) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var hdr []string
				if tt.contentType != "" {
					hdr = []string{"Content-Type", tt.contentType}
				}
				p := requireProblem(t, e.request(t, http.MethodPost, "/", "alice", tt.body, hdr...), tt.status, tt.code)
				require.Contains(t, p.Detail, tt.detail)
				require.LessOrEqual(t, len(p.Detail), 256, p.Detail)
				for _, leak := range []string{"Go ", "struct", "json:", "exporterhttp", "map[", "RawMessage", "int"} {
					require.NotContains(t, p.Detail, leak)
				}
			})
		}
		require.Empty(t, e.listIDs(t, "alice"), "no refused POST started an export")
	})
}

// TestStartFilename checks that the filename is sanitized and shortened
// with its extension kept before it is stored, wherever it was sent.
func TestStartFilename(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	longName := strings.Repeat("é", 200) + ".csv"
	tests := []struct {
		name, body string
		want       string // "" for no filename stored
	}{
		{"plain", `{"filename":"orders.csv"}`, "orders.csv"},
		{"path", `{"filename":"../../etc/passwd"}`, "passwd"},
		{"windows path", `{"filename":"C:\\Users\\x\\report.csv"}`, "report.csv"},
		{"controls and quotes", `{"filename":"a\u0000b\r\n\"q\".csv"}`, "a_b___q_.csv"},
		{"bidi override", `{"filename":"invoice\u202Efdp.exe"}`, "invoice_fdp.exe"},
		{"long", `{"filename":"` + longName + `"}`, strings.Repeat("é", 125) + ".csv"},
		{"in metadata", `{"metadata":{"filename":"md/orders.csv"}}`, "orders.csv"},
		{"field over metadata", `{"filename":"field.csv","metadata":{"filename":"md.csv"}}`, "field.csv"},
		{"nothing usable", `{"filename":"..."}`, ""},
		{"none", `{}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body map[string]any
			require.NoError(t, json.Unmarshal([]byte(tt.body), &body))
			body["kind"], body["args"] = "csv", map[string]int{"rows": 1}
			data, err := json.Marshal(body)
			require.NoError(t, err)
			rep := e.request(t, http.MethodPost, "/", "alice", string(data))
			require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
			got, ok := decodeJob(t, rep).Metadata[exporter.MetadataFilename]
			require.Equal(t, tt.want != "", ok)
			require.Equal(t, tt.want, got)
			require.LessOrEqual(t, len(got), 255)
			require.True(t, utf8.ValidString(got))
		})
	}
}

// TestStartLocation checks the Location of a new export wherever the
// Handler is mounted: it is a path the service answers with the export.
func TestStartLocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	mux := http.NewServeMux()
	mux.Handle("/exports/", http.StripPrefix("/exports", e.h))
	mux.Handle("/exports", http.StripPrefix("/exports", e.h))
	mux.Handle("/api/v1/exports/", http.StripPrefix("/api/v1/exports", e.h))
	mounted := httptest.NewServer(mux)
	defer mounted.Close()
	root := httptest.NewServer(e.h)
	defer root.Close()
	tests := []struct {
		srv          *httptest.Server
		post, prefix string
	}{
		{mounted, "/exports/", "/exports/"},
		{mounted, "/exports", "/exports/"},
		{mounted, "/api/v1/exports/", "/api/v1/exports/"},
		{root, "/", "/"},
	}
	for _, tt := range tests {
		t.Run(tt.post, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, tt.srv.URL+tt.post, strings.NewReader(`{"kind":"csv","args":{"rows":1}}`))
			require.NoError(t, err)
			req.Header.Set("X-User", "alice")
			resp, err := tt.srv.Client().Do(req)
			require.NoError(t, err)
			var job exporter.Job
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
			resp.Body.Close()
			require.Equal(t, http.StatusCreated, resp.StatusCode)
			loc := resp.Header.Get("Location")
			require.Equal(t, tt.prefix+job.ID, loc)

			req, err = http.NewRequest(http.MethodGet, tt.srv.URL+loc, nil)
			require.NoError(t, err)
			req.Header.Set("X-User", "alice")
			resp, err = tt.srv.Client().Do(req)
			require.NoError(t, err)
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)
			require.Contains(t, string(data), job.ID)
		})
	}
}

// TestStartAfterShutdown checks that an Exporter that shut down refuses
// starts with 503 "shutting_down" and Retry-After, and still answers
// reads.
func TestStartAfterShutdown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.startCSV(t, "alice", 1, "")
		require.NoError(t, e.exp.Shutdown(t.Context()))
		rep := e.request(t, http.MethodPost, "/", "alice", `{"kind":"csv","args":{"rows":1}}`)
		requireProblem(t, rep, http.StatusServiceUnavailable, "shutting_down")
		require.Equal(t, "1", rep.header.Get("Retry-After"))
		require.Equal(t, exporter.StatusCompleted, decodeJob(t, e.request(t, http.MethodGet, "/"+job.ID, "alice", "")).Status)
	})
}

// TestStartPrepare checks Config.Prepare: its options reach Enqueue (a
// total, so that the job has one from its 201), an error wrapping
// exporter.ErrInvalid is a 400 "invalid" with the error's text and starts
// nothing, and any other error is a 500 that does not carry it.
func TestStartPrepare(t *testing.T) {
	e := newEnv(t, "miniredis", func(cfg *exporterhttp.Config) {
		cfg.Prepare = func(r *http.Request, user exporter.User, kind string, args json.RawMessage) ([]exporter.StartOption, error) {
			var a struct {
				Rows int `json:"rows"`
			}
			if err := json.Unmarshal(args, &a); err != nil || a.Rows < 1 {
				return nil, fmt.Errorf("%w: rows must be at least 1", exporter.ErrInvalid)
			}
			if a.Rows == 13 {
				return nil, fmt.Errorf("the catalogue database is down: secret details")
			}
			return []exporter.StartOption{exporter.WithTotal(int64(len(csvData(a.Rows))))}, nil
		}
	})
	rep := e.request(t, http.MethodPost, "/", "alice", `{"kind":"csv","args":{"rows": 4}}`)
	require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
	job := decodeJob(t, rep)
	require.Equal(t, int64(len(csvData(4))), job.Total)
	done := e.wait(t, "alice", job.ID)
	require.Equal(t, exporter.StatusCompleted, done.Status, done.Error)
	require.Equal(t, 1.0, done.Progress())

	p := requireProblem(t, e.request(t, http.MethodPost, "/", "alice", `{"kind":"csv","args":{"rows": 0}}`), http.StatusBadRequest, "invalid")
	require.Contains(t, p.Detail, "rows must be at least 1")
	p = requireProblem(t, e.request(t, http.MethodPost, "/", "alice", `{"kind":"csv","args":{"rows": 13}}`), http.StatusInternalServerError, "internal")
	require.NotContains(t, p.Detail, "secret")
	require.Equal(t, []string{job.ID}, e.listIDs(t, "alice"), "a refused POST started an export")
}
