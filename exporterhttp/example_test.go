package exporterhttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/exporterhttp"
)

// The example mounts the Handler on a service's ServeMux, starts an
// export with a POST, waits for it, and downloads it. The Exporter runs on
// miniredis, an in-process Redis; a service passes its own client.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	// A durable kind: its args say what to export.
	greetings := func(_ context.Context, job *exporter.Job, offset int64) (io.Reader, error) {
		var args struct {
			Names []string `json:"names"`
		}
		if err := json.Unmarshal(job.Args, &args); err != nil {
			return nil, fmt.Errorf("%w: %w", exporter.ErrPermanent, err)
		}
		var b strings.Builder
		for _, name := range args.Names {
			fmt.Fprintf(&b, "hello, %s\n", name)
		}
		return strings.NewReader(b.String()[offset:]), nil
	}
	exp, err := exporter.New(exporter.NewRedisStore(client), exporter.Config{
		Sources: map[string]exporter.Source{"greetings": greetings},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer exp.Shutdown(ctx)

	h, err := exporterhttp.New(exporterhttp.Config{
		Exporter: exp,
		// The service's own authentication: here, everyone is alice.
		Authenticate: func(r *http.Request) (exporter.User, error) {
			return exporter.User{ID: "alice", Permissions: []string{exporter.DefaultPermission}}, nil
		},
		Kinds: []string{"greetings"},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/exports/", http.StripPrefix("/exports", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer h.CloseStreams()

	resp, err := http.Post(srv.URL+"/exports/", "application/json",
		strings.NewReader(`{"kind": "greetings", "args": {"names": ["Ada", "Grace"]}, "filename": "greetings.txt"}`))
	if err != nil {
		log.Fatal(err)
	}
	var job exporter.Job
	if err := json.NewDecoder(resp.Body).Decode(&job); err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	location := resp.Header.Get("Location")
	fmt.Println(resp.Status, strings.TrimSuffix(location, job.ID)+"<id>", job.Metadata[exporter.MetadataFilename])

	// A client would follow GET /exports/<id>/events to the "end" event.
	if _, err := exp.WaitExport(ctx, exporter.User{ID: "alice"}, job.ID); err != nil {
		log.Fatal(err)
	}
	resp, err = http.Get(srv.URL + location + "/download")
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, resp.Header.Get("Content-Disposition"))
	fmt.Print(string(body))

	resp, err = http.Get(srv.URL + "/exports/" + job.ID + "/nothing")
	if err != nil {
		log.Fatal(err)
	}
	problem, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"))
	fmt.Print(string(problem))
	// Output:
	// 201 Created /exports/<id> greetings.txt
	// 200 OK attachment; filename="greetings.txt"; filename*=UTF-8''greetings.txt
	// hello, Ada
	// hello, Grace
	// 404 Not Found application/problem+json
	// {"type":"https://github.com/exporterkit/exporter/exporterhttp#not_found","title":"Not found","status":404,"detail":"no such resource","code":"not_found"}
}
