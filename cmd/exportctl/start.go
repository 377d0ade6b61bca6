package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/exporterkit/exporter"
)

func (a *app) startCommand() *cobra.Command {
	o := &startOptions{meta: metaFlag{}, maxBytes: sizeFlag{n: exporter.DefaultMaxBytes, set: true}}
	cmd := &cobra.Command{
		Use:   "start FILE|-",
		Short: "export FILE (- for stdin) with this process as its worker, and wait for the end",
		Long: `Export FILE (- for stdin) with this process as its worker, and wait for the end.

This process copies the bytes into Redis itself: the export lives as long
as the process does. It prints the export's id on the first line of stdout
as soon as the export is recorded (with -json: the Job, then the final Job
when it ends), shows the progress on stderr, and exits when the export ends:
0 completed, 6 failed, 7 cancelled (by 'exportctl cancel' or an admin
elsewhere). Ctrl-C (or SIGTERM) cancels the export and exits 7; a second
Ctrl-C exits at once. If the process is killed, every reader sees the export
fail ("worker lost") about 15 s later, when its lease lapses.

In a script, capture the id from the first line while the export runs:

  exportctl start big.csv >id.txt &   # or: id=$(exportctl start small.csv)

The filename metadata defaults to FILE's base name and content-type to its
extension's MIME type; for stdin, pass -name. The expected size (for the
progress) is FILE's size when it is a regular file; pass -total otherwise.`,
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveDefault // a file name
		},
		RunE: func(cmd *cobra.Command, args []string) error { return a.start(cmd.Context(), args, o) },
	}
	fs := cmd.Flags()
	fs.Var(&o.total, "total", "expected `size` of the export, for progress (default: FILE's size when known)")
	fs.StringVar(&o.name, "name", "", "`filename` metadata (default: FILE's base name)")
	fs.StringVar(&o.contentType, "content-type", "", "content-type metadata (default: from the filename's extension)")
	fs.Var(o.meta, "meta", "metadata `KEY=VALUE`; repeat for more")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress or summary on stderr")
	fs.Var(&o.maxBytes, "max-bytes", "largest export `size`: the export fails beyond it (Config.MaxBytes)")
	fs.DurationVar(&o.retention, "retention", exporter.DefaultRetention, "how long the export is kept after its last update (Config.Retention)")
	for _, name := range []string{"total", "name", "content-type", "meta", "max-bytes", "retention"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions) // fails only on an unknown name
	}
	return cmd
}

type startOptions struct {
	total       sizeFlag
	name        string
	contentType string
	meta        metaFlag
	quiet       bool
	maxBytes    sizeFlag
	retention   time.Duration
}

func (a *app) start(ctx context.Context, args []string, o *startOptions) error {
	if len(args) != 1 {
		return usageErrorf("start", "want one FILE, or - for stdin; got %d arguments", len(args))
	}
	src, size, base, err := a.openSource(args[0])
	if err != nil {
		return err
	}
	md := maps.Clone(map[string]string(o.meta))
	if name := cmp.Or(o.name, base); name != "" {
		md[exporter.MetadataFilename] = name
		if ct := cmp.Or(o.contentType, mime.TypeByExtension(filepath.Ext(name))); ct != "" {
			md[exporter.MetadataContentType] = ct
		}
	} else if o.contentType != "" {
		md[exporter.MetadataContentType] = o.contentType
	}
	total := size
	if o.total.set {
		total = o.total.n
	}

	c, err := a.connect(ctx, exporter.Config{MaxBytes: o.maxBytes.n, Retention: o.retention})
	if err != nil {
		src.Close()
		return err
	}
	counted := &countingReader{ReadCloser: src}
	opts := []exporter.StartOption{exporter.WithMetadata(md)}
	if total > 0 {
		opts = append(opts, exporter.WithTotal(total))
	}
	began := time.Now()
	tctx, cancel := context.WithTimeout(ctx, a.timeout)
	job, err := c.exp.StartExport(tctx, c.user, counted, opts...) // closes counted on error
	cancel()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// The id first, at once: a script reads it while the export runs.
	if a.json {
		writeJSON(a.stdout, job)
	} else {
		fmt.Fprintln(a.stdout, job.ID)
	}

	var m *meter
	if !o.quiet {
		m = startMeter(a.stderr, "export "+job.ID[:8], total, 0, &counted.n)
	}
	final, err := a.waitOut(ctx, c, job.ID)
	m.Stop()
	interrupted := err != nil && ctx.Err() != nil
	if interrupted {
		final, err = a.cancelInterrupted(ctx, c, job.ID)
	}
	if err != nil {
		// If Redis stayed away (the probe's "lost Redis"), the export
		// cannot end well: run's Shutdown gives it -timeout, then fails it
		// (or its lease lapses).
		return fmt.Errorf("export %s: %w", job.ID, err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	serr := c.shutdown(sctx)
	cancel()

	if a.json {
		writeJSON(a.stdout, final)
	}
	if final.Status == exporter.StatusCompleted && !o.quiet {
		took := time.Since(began)
		fmt.Fprintf(a.stderr, "export %s completed: %s in %s (%s), %s\n", final.ID,
			formatBytes(final.Bytes), formatDuration(took), formatRate(final.Bytes, took), final.Checksum)
	}
	outcome := terminalOutcome(final)
	if interrupted && final.Status == exporter.StatusCancelled {
		outcome = codedErrorf(exitCancelled, "interrupted: export %s cancelled after %s", final.ID, formatBytes(final.Bytes))
	}
	if serr != nil && outcome == nil {
		return fmt.Errorf("shutdown: %w", serr)
	}
	return outcome
}

// waitOut waits for the end of export id: WaitExport under probeRedis.
// WaitExport rides out an outage after its first read; a first read that
// fails to reach Redis is tried again here, for as long as the probe
// allows.
func (a *app) waitOut(ctx context.Context, c *conn, id string) (*exporter.Job, error) {
	wctx, stop := a.probeRedis(ctx, c, id)
	job, err := c.exp.WaitExport(wctx, c.user, id)
	for err != nil && unreachable(err) && wctx.Err() == nil {
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-wctx.Done():
		case <-t.C:
		}
		t.Stop()
		job, err = c.exp.WaitExport(wctx, c.user, id)
	}
	if lost := stop(); lost != nil && err != nil {
		err = lost
	}
	return job, err
}

// unreachable reports whether err is a failure to reach Redis (a refused
// or dropped connection, a network timeout), not an answer.
func unreachable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// probeRedis returns a context for a wait on export id that ends once
// Redis has not answered for DefaultLeaseTTL, and the function that ends
// the probe and returns that loss (nil if Redis stayed).
//
// WaitExport and WatchExport ride out a Redis outage: they re-read until
// their ctx is done. That suits a service, but an operator waiting on a
// Redis that has gone for good wants to be told; and an export whose Redis
// stays away longer than its lease cannot end well (its end cannot even be
// recorded). So a probe pings Redis while the wait lasts.
func (a *app) probeRedis(ctx context.Context, c *conn, id string) (context.Context, func() error) {
	wctx, giveUp := context.WithCancelCause(ctx)
	var lost error // set before giveUp, read after probe.Wait
	var probe sync.WaitGroup
	probe.Add(1)
	go func() { // owned: the returned function waits for it
		defer probe.Done()
		var failing time.Time
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			pctx, cancel := context.WithTimeout(wctx, time.Second)
			err := c.client.Ping(pctx).Err()
			cancel()
			switch {
			case wctx.Err() != nil:
				return
			case err == nil:
				failing = time.Time{}
			case failing.IsZero():
				failing = time.Now()
				fmt.Fprintf(a.stderr, "exportctl: export %s: waiting for Redis at %s: %s\n", id, c.addr, message(err))
			case time.Since(failing) > exporter.DefaultLeaseTTL:
				lost = fmt.Errorf("lost Redis at %s: %w", c.addr, err)
				giveUp(lost)
				return
			}
		}
	}()
	return wctx, func() error {
		giveUp(nil)
		probe.Wait()
		return lost
	}
}

// cancelInterrupted cancels export id after a signal and returns it as it
// ended: cancelled, or what it was if it finished first.
func (a *app) cancelInterrupted(ctx context.Context, c *conn, id string) (*exporter.Job, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	job, err := c.exp.CancelExport(cctx, c.user, id)
	if errors.Is(err, exporter.ErrFinished) {
		return job, nil
	}
	if err != nil {
		return nil, fmt.Errorf("interrupted, and the cancel failed: %w", err)
	}
	return job, nil
}

// openSource opens FILE, or stdin for "-". It returns the expected size
// (-1 when unknown) and the name for the filename metadata ("" for stdin).
func (a *app) openSource(arg string) (io.ReadCloser, int64, string, error) {
	if arg == "-" {
		if f, ok := a.stdin.(*os.File); ok {
			// Redirected from a file (< file): its size is known, and a
			// regular file's Read never blocks for good.
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				if off, err := f.Seek(0, io.SeekCurrent); err == nil {
					return f, fi.Size() - off, "", nil
				}
			}
		}
		return pipeSource(a.stdin), -1, "", nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, 0, "", err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, "", err
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, 0, "", usageErrorf("start", "%s is a directory", arg)
	case fi.Mode().IsRegular():
		return f, fi.Size(), filepath.Base(arg), nil
	}
	return f, -1, filepath.Base(arg), nil // a FIFO or a device: size unknown
}

// pipeSource reads r through a pipe whose Close returns at once. The
// exporter closes its source to stop it when the export is cancelled; a
// blocking read of a terminal or a pipe on stdin would ignore that Close
// (os.Stdin is not in the runtime's poller), and Shutdown would then wait
// for a Read that may never return. The goroutine copying from r ends at
// r's next Read after the Close, or with the process.
func pipeSource(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, r)
		pw.CloseWithError(err)
	}()
	return pr
}

// sizeFlag is a byte count: 1048576, 1MiB, 1.5GB, 64k (k, m, g are KiB,
// MiB, GiB). Its zero value is "not given".
type sizeFlag struct {
	n   int64
	set bool
}

func (s *sizeFlag) String() string {
	if s == nil || !s.set {
		return ""
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s.n >= u.size && s.n%u.size == 0 {
			return strconv.FormatInt(s.n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(s.n, 10)
}

// Type names the value in help: --total size.
func (s *sizeFlag) Type() string { return "size" }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag{n: n, set: true}
	return nil
}

func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		size   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"k", 1 << 10}, {"K", 1 << 10}, {"m", 1 << 20}, {"M", 1 << 20}, {"g", 1 << 30}, {"G", 1 << 30},
		{"B", 1},
	}
	num, mult := strings.TrimSpace(v), 1.0
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.size
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("not a size: %q (want bytes, or a number with KiB, MiB, GiB, kB, MB, GB)", v)
	}
	return int64(f * mult), nil
}

// metaFlag collects -meta KEY=VALUE.
type metaFlag map[string]string

func (m metaFlag) String() string { return "" }

// Type names the value in help, where the usage does not.
func (m metaFlag) Type() string { return "KEY=VALUE" }

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, not %q", v)
	}
	m[k] = val
	return nil
}
