package exporterhttp_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/exporterkit/exporter"
	"github.com/stretchr/testify/require"
)

// TestDownload checks GET /{id}/download of a completed export: the bytes,
// the headers taken from the export (ETag, Content-Type,
// Content-Disposition, Last-Modified), and the conditional and Range
// requests that http.ServeContent answers from them, errors included as
// problem documents.
func TestDownload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.startCSV(t, "alice", 300, `Rapport d'été "final".csv`)
		require.Equal(t, exporter.StatusCompleted, job.Status, job.Error)
		data := csvData(300)
		n := len(data)
		require.Greater(t, n, 3*chunkSize)
		sum := sha256.Sum256(data)
		etag := `"` + hex.EncodeToString(sum[:]) + `"`
		lastModified := job.FinishedAt.UTC().Format(http.TimeFormat)
		path := "/" + job.ID + "/download"

		rep := e.request(t, http.MethodGet, path, "alice", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, data, rep.body)
		require.Equal(t, etag, rep.header.Get("ETag"))
		require.Equal(t, "text/csv; charset=utf-8", rep.header.Get("Content-Type"))
		require.Equal(t, strconv.Itoa(n), rep.header.Get("Content-Length"))
		require.Equal(t, "bytes", rep.header.Get("Accept-Ranges"))
		require.Equal(t, lastModified, rep.header.Get("Last-Modified"))
		require.Equal(t, "private, no-cache", rep.header.Get("Cache-Control"))
		cd := rep.header.Get("Content-Disposition")
		require.Equal(t, `attachment; filename="Rapport d'_t_ _final_.csv"; filename*=UTF-8''Rapport%20d%27%C3%A9t%C3%A9%20_final_.csv`, cd)
		disposition, params, err := mime.ParseMediaType(cd)
		require.NoError(t, err)
		require.Equal(t, "attachment", disposition)
		require.Equal(t, `Rapport d'été _final_.csv`, params["filename"])

		tests := []struct {
			name         string
			hdr          []string
			method       string
			status       int
			body         []byte
			contentRange string
		}{
			{"range", []string{"Range", "bytes=100-1199"}, "", http.StatusPartialContent, data[100:1200], "bytes 100-1199/" + strconv.Itoa(n)},
			{"range across chunks", []string{"Range", "bytes=1000-3100"}, "", http.StatusPartialContent, data[1000:3101], "bytes 1000-3100/" + strconv.Itoa(n)},
			{"suffix range", []string{"Range", "bytes=-10"}, "", http.StatusPartialContent, data[n-10:], "bytes " + strconv.Itoa(n-10) + "-" + strconv.Itoa(n-1) + "/" + strconv.Itoa(n)},
			{"open range", []string{"Range", "bytes=" + strconv.Itoa(n-5) + "-"}, "", http.StatusPartialContent, data[n-5:], "bytes " + strconv.Itoa(n-5) + "-" + strconv.Itoa(n-1) + "/" + strconv.Itoa(n)},
			{"if-range etag", []string{"Range", "bytes=5-9", "If-Range", etag}, "", http.StatusPartialContent, data[5:10], "bytes 5-9/" + strconv.Itoa(n)},
			{"if-range date", []string{"Range", "bytes=5-9", "If-Range", lastModified}, "", http.StatusPartialContent, data[5:10], "bytes 5-9/" + strconv.Itoa(n)},
			{"if-range stale", []string{"Range", "bytes=5-9", "If-Range", `"` + strings.Repeat("0", 64) + `"`}, "", http.StatusOK, data, ""},
			{"if-none-match", []string{"If-None-Match", etag}, "", http.StatusNotModified, []byte{}, ""},
			{"if-none-match other", []string{"If-None-Match", `"other"`}, "", http.StatusOK, data, ""},
			{"head", nil, http.MethodHead, http.StatusOK, []byte{}, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				method := tt.method
				if method == "" {
					method = http.MethodGet
				}
				rep := e.request(t, method, path, "alice", "", tt.hdr...)
				require.Equal(t, tt.status, rep.status, "%s", rep.body)
				require.Equal(t, tt.body, rep.body)
				require.Equal(t, tt.contentRange, rep.header.Get("Content-Range"))
				require.Equal(t, etag, rep.header.Get("ETag"))
				if tt.status != http.StatusNotModified {
					require.Equal(t, cd, rep.header.Get("Content-Disposition"))
					length := len(tt.body)
					if method == http.MethodHead {
						length = n
					}
					require.Equal(t, strconv.Itoa(length), rep.header.Get("Content-Length"))
				}
			})
		}

		t.Run("multiple ranges", func(t *testing.T) {
			rep := e.request(t, http.MethodGet, path, "alice", "", "Range", "bytes=0-9,2000-2009")
			require.Equal(t, http.StatusPartialContent, rep.status)
			mediaType, params, err := mime.ParseMediaType(rep.header.Get("Content-Type"))
			require.NoError(t, err)
			require.Equal(t, "multipart/byteranges", mediaType)
			mr := multipart.NewReader(bytes.NewReader(rep.body), params["boundary"])
			for _, want := range [][]byte{data[0:10], data[2000:2010]} {
				part, err := mr.NextPart()
				require.NoError(t, err)
				require.Equal(t, "text/csv; charset=utf-8", part.Header.Get("Content-Type"))
				got, err := io.ReadAll(part)
				require.NoError(t, err)
				require.Equal(t, want, got)
			}
			_, err = mr.NextPart()
			require.ErrorIs(t, err, io.EOF)
		})
		t.Run("range not satisfiable", func(t *testing.T) {
			rep := e.request(t, http.MethodGet, path, "alice", "", "Range", "bytes="+strconv.Itoa(n)+"-")
			requireProblem(t, rep, http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable")
			require.Equal(t, "bytes */"+strconv.Itoa(n), rep.header.Get("Content-Range"))
			require.Empty(t, rep.header.Get("Content-Disposition"), "an error is not a file")
		})
		t.Run("if-match stale", func(t *testing.T) {
			rep := e.request(t, http.MethodGet, path, "alice", "", "If-Match", `"other"`)
			requireProblem(t, rep, http.StatusPreconditionFailed, "precondition_failed")
			require.Empty(t, rep.header.Get("Content-Disposition"))
		})
	})
}

// TestDownloadDefaults checks the name and type of an export stored
// without them, or with a type that does not parse.
func TestDownloadDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "miniredis", nil)
	for _, md := range []string{``, `,"metadata":{"content-type":"not a media type"}`} {
		rep := e.request(t, http.MethodPost, "/", "alice", `{"kind":"csv","args":{"rows":2}`+md+`}`)
		require.Equal(t, http.StatusCreated, rep.status, "%s", rep.body)
		job := e.wait(t, "alice", decodeJob(t, rep).ID)
		rep = e.request(t, http.MethodGet, "/"+job.ID+"/download", "alice", "")
		require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
		require.Equal(t, csvData(2), rep.body)
		require.Equal(t, "application/octet-stream", rep.header.Get("Content-Type"))
		require.Equal(t, "nosniff", rep.header.Get("X-Content-Type-Options"))
		require.Equal(t, `attachment; filename="export-`+job.ID+`"; filename*=UTF-8''export-`+job.ID, rep.header.Get("Content-Disposition"))
	}
}

// TestDownloadNotCompleted checks that an export that is running, or was
// cancelled, is 409 "not_completed" with the export and its status.
func TestDownloadNotCompleted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		job := e.start(t, "alice", "gate", "null")
		e.gate.feed(t, 10)
		e.running(t, "alice", job.ID, 0)
		for _, want := range []exporter.Status{exporter.StatusRunning, exporter.StatusCancelled} {
			p := requireProblem(t, e.request(t, http.MethodGet, "/"+job.ID+"/download", "alice", ""), http.StatusConflict, "not_completed")
			var export exporter.Job
			require.NoError(t, json.Unmarshal(p.Export, &export))
			require.Equal(t, job.ID, export.ID)
			require.Equal(t, want, export.Status)
			if want == exporter.StatusRunning {
				rep := e.request(t, http.MethodDelete, "/"+job.ID, "alice", "")
				require.Equal(t, http.StatusOK, rep.status, "%s", rep.body)
			}
		}
	})
}
