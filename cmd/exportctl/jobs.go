package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/exporterkit/exporter"
)

var statusCommand = &command{
	name:    "status",
	args:    "ID",
	summary: "show an export",
	help: `
Exits 0 when the export was found, whatever its status (a failed export is
still a successful status read); 3 when it was not. Use 'wait' for an exit
code that tells the export's end.`,
	setup: func(_ *flag.FlagSet, a *app) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error { return a.status(ctx, args) }
	},
}

var watchCommand = &command{
	name:    "watch",
	args:    "ID",
	summary: "print an export's progress until it ends",
	help: `
Prints a line (with -json: the Job) when the export's status or size
changes, at most one per -every, and exits with the end's code: 0 completed,
6 failed, 7 cancelled. Ctrl-C stops watching (exit 130), not the export.`,
	setup: func(fs *flag.FlagSet, a *app) func(context.Context, []string) error {
		every := fs.Duration("every", time.Second, "least time between two progress lines")
		return func(ctx context.Context, args []string) error { return a.watch(ctx, args, *every) }
	},
}

var waitCommand = &command{
	name:    "wait",
	args:    "ID",
	summary: "wait for an export's end, then print it",
	help: `
Prints nothing until the export ends, then one line (with -json: the Job),
and exits with the end's code: 0 completed, 6 failed, 7 cancelled. An export
whose worker died ends failed when its lease lapses. Ctrl-C stops waiting
(exit 130), not the export.`,
	setup: func(_ *flag.FlagSet, a *app) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error { return a.wait(ctx, args) }
	},
}

var cancelCommand = &command{
	name:    "cancel",
	args:    "ID",
	summary: "cancel a pending or running export",
	help: `
Records the cancel in Redis and prints the export; the process running it
stops (its 'exportctl start' exits 7). Cancelling a cancelled export is fine
(exit 0); a completed or failed one is left as it is and exits 5.`,
	setup: func(_ *flag.FlagSet, a *app) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error { return a.cancel(ctx, args) }
	},
}

func (a *app) status(ctx context.Context, args []string) error {
	id, c, err := a.connectFor(ctx, "status", args)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	job, err := c.exp.GetExportStatus(tctx, c.user, id)
	if err != nil {
		return err
	}
	return a.printJob(job)
}

func (a *app) watch(ctx context.Context, args []string, every time.Duration) error {
	id, c, err := a.connectFor(ctx, "watch", args)
	if err != nil {
		return err
	}
	var last *exporter.Job
	wctx, stop := a.probeRedis(ctx, c, id)
	defer stop()
	// WatchExport rides out an outage after its first read; a first read
	// that fails to reach Redis is tried again, for as long as the probe
	// allows (as in waitOut).
	for again := true; again; {
		again = false
		for job, err := range c.exp.WatchExport(wctx, c.user, id, exporter.WatchEvery(every)) {
			if err != nil && last == nil && unreachable(err) && wctx.Err() == nil {
				again = true
				break
			}
			if err != nil {
				if lost := stop(); lost != nil {
					err = lost
				}
				return leftAlone(ctx, "watching", id, err)
			}
			last = job
			if err := a.printLine(job); err != nil {
				return err
			}
		}
		if again {
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-wctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	if last == nil || !last.Status.Terminal() {
		return fmt.Errorf("watch %s ended before the export did", id)
	}
	return terminalOutcome(last)
}

func (a *app) wait(ctx context.Context, args []string) error {
	id, c, err := a.connectFor(ctx, "wait", args)
	if err != nil {
		return err
	}
	job, err := a.waitOut(ctx, c, id)
	if err != nil {
		return leftAlone(ctx, "waiting", id, err)
	}
	return errors.Join(terminalOutcome(job), a.printLine(job))
}

func (a *app) cancel(ctx context.Context, args []string) error {
	id, c, err := a.connectFor(ctx, "cancel", args)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	job, err := c.exp.CancelExport(tctx, c.user, id)
	if job != nil {
		if perr := a.printJob(job); perr != nil && err == nil {
			return perr
		}
	}
	if errors.Is(err, exporter.ErrFinished) {
		return codedErrorf(exitFinished, "cancel %s: the export already %s: nothing to cancel", id, job.Status)
	}
	return err
}

// leftAlone is err, or when a signal stopped the command, an interruption
// that says the export carries on.
func leftAlone(ctx context.Context, doing, id string, err error) error {
	if ctx.Err() != nil {
		return codedErrorf(exitInterrupted, "interrupted: stopped %s; export %s carries on", doing, id)
	}
	return err
}

// connectFor returns the one export id in the arguments of cmd, and a
// connection to act on it.
func (a *app) connectFor(ctx context.Context, cmd string, args []string) (string, *conn, error) {
	id, err := oneID(cmd, args)
	if err != nil {
		return "", nil, err
	}
	c, err := a.connect(ctx, exporter.Config{})
	return id, c, err
}

// printLine prints job as one line, as watch and wait do.
func (a *app) printLine(job *exporter.Job) error {
	if a.json {
		return writeJSON(a.stdout, job)
	}
	_, err := fmt.Fprintln(a.stdout, jobLine(job, time.Now()))
	return err
}

// printJob prints job as status does.
func (a *app) printJob(job *exporter.Job) error {
	if a.json {
		return writeJSON(a.stdout, job)
	}
	return writeJob(a.stdout, job, time.Now())
}

// oneID returns the single export id among args. An id is a UUID in the
// canonical lower-case form; the library answers ErrNotFound for anything
// else, but a malformed id is a typing mistake, so it is a usage error
// here. Upper case is accepted and lowered.
func oneID(cmd string, args []string) (string, error) {
	if len(args) != 1 {
		return "", usageErrorf(cmd, "want one export ID, got %d arguments", len(args))
	}
	id := strings.ToLower(args[0])
	if !exporter.ValidID(id) {
		return "", usageErrorf(cmd, "%q is not an export id (a UUID such as 0b7c1e2f-4a5d-4c3b-9e8f-1a2b3c4d5e6f)", args[0])
	}
	return id, nil
}
