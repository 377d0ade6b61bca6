package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/exporterkit/exporter"
)

func (a *app) listCommand() *cobra.Command {
	var (
		o   exporter.ListOptions
		all bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list exports, newest first",
		Long: `List exports, newest first.

Lists your exports (an admin lists another user's with -admin -owner USER)
that have not expired, one page of -limit at a time: when there are more,
stderr says how to get the next page, or pass -all to follow every page.
With -json each page is one ExportList object per line, its "next" the
cursor of the page after it.`,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.list(cmd.Context(), args, o, all) },
	}
	fs := cmd.Flags()
	fs.BoolVar(&all, "all", false, "follow the cursors: list every page")
	fs.StringVar(&o.Owner, "owner", "", "list `USER`'s exports (needs -admin unless it is you)")
	fs.IntVar(&o.Limit, "limit", exporter.DefaultListLimit, fmt.Sprintf("exports per page, 1 to %d", exporter.MaxListLimit))
	fs.StringVar(&o.Cursor, "cursor", "", "start after this `cursor` (the \"next\" of a previous page)")
	for _, name := range []string{"owner", "limit", "cursor"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions) // fails only on an unknown name
	}
	return cmd
}

func (a *app) list(ctx context.Context, args []string, opts exporter.ListOptions, all bool) error {
	if len(args) != 0 {
		return usageErrorf("list", "takes no arguments, got %q", args)
	}
	if opts.Limit < 1 || opts.Limit > exporter.MaxListLimit {
		return usageErrorf("list", "-limit must be 1 to %d, not %d", exporter.MaxListLimit, opts.Limit)
	}
	c, err := a.connect(ctx, exporter.Config{})
	if err != nil {
		return err
	}
	var jobs []*exporter.Job
	more := "" // the cursor of the page after the last one shown
	for {
		tctx, cancel := context.WithTimeout(ctx, a.timeout)
		page, err := c.exp.ListExports(tctx, c.user, opts)
		cancel()
		if err != nil {
			return err
		}
		if a.json {
			if err := writeJSON(a.stdout, page); err != nil {
				return err
			}
		} else {
			jobs = append(jobs, page.Jobs...)
		}
		if page.Next == "" {
			break
		}
		if !all {
			more = page.Next
			break
		}
		opts.Cursor = page.Next
	}
	if a.json {
		return nil
	}
	if err := writeTable(a.stdout, jobs); err != nil {
		return err
	}
	if more != "" {
		fmt.Fprintf(a.stderr, "more exports: add -cursor %s, or -all\n", more)
	}
	return nil
}
