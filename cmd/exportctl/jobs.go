package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/exporterkit/exporter"
)

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "show an export",
		Long: `Show an export.

Exits 0 when the export was found, whatever its status (a failed export is
still a successful status read); 3 when it was not. Use 'wait' for an exit
code that tells the export's end.`,
		ValidArgsFunction: a.completeID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.status(cmd.Context(), args) },
	}
}

func (a *app) watchCommand() *cobra.Command {
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "print an export's progress until it ends",
		Long: `Print an export's progress until it ends.

Prints a line (with -json: the Job) when the export's status or size
changes, at most one per -every, and exits with the end's code: 0 completed,
6 failed, 7 cancelled. Ctrl-C stops watching (exit 130), not the export.`,
		ValidArgsFunction: a.completeID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.watch(cmd.Context(), args, every) },
	}
	cmd.Flags().DurationVar(&every, "every", time.Second, "least time between two progress lines")
	_ = cmd.RegisterFlagCompletionFunc("every", cobra.NoFileCompletions) // fails only on an unknown name
	return cmd
}

func (a *app) waitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "wait for an export's end, then print it",
		Long: `Wait for an export's end, then print it.

Prints nothing until the export ends, then one line (with -json: the Job),
and exits with the end's code: 0 completed, 6 failed, 7 cancelled. An export
whose worker died ends failed when its lease lapses. Ctrl-C stops waiting
(exit 130), not the export.`,
		ValidArgsFunction: a.completeID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.wait(cmd.Context(), args) },
	}
}

func (a *app) cancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "cancel a pending or running export",
		Long: `Cancel a pending or running export.

Records the cancel in Redis and prints the export; the process running it
stops (its 'exportctl start' exits 7). Cancelling a cancelled export is fine
(exit 0); a completed or failed one is left as it is and exits 5.`,
		ValidArgsFunction: a.completeID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.cancel(cmd.Context(), args) },
	}
}

// completeTimeout bounds what completing an export id may take: a shell
// waits for it at every Tab.
const completeTimeout = 2 * time.Second

// completeID completes the export id of status, watch, wait, cancel and
// download with the user's newest exports, described by status and
// filename. Without Redis within completeTimeout it offers nothing (and no
// file names: an id is never one).
func (a *app) completeID(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	a.timeout = min(a.timeout, completeTimeout) // also bounds run's shutdown of the connection
	c, err := a.connect(cmd.Context(), exporter.Config{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	page, err := c.exp.ListExports(ctx, c.user, exporter.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []cobra.Completion
	for _, j := range page.Jobs {
		if strings.HasPrefix(j.ID, strings.ToLower(toComplete)) {
			desc := strings.TrimSpace(string(j.Status) + " " + j.Metadata[exporter.MetadataFilename])
			ids = append(ids, cobra.CompletionWithDesc(j.ID, desc))
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
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
