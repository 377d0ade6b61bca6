package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/exporterkit/exporter"
)

func (a *app) downloadCommand() *cobra.Command {
	o := &downloadOptions{}
	cmd := &cobra.Command{
		Use:   "download ID -o FILE|-",
		Short: "download a completed export, resuming an interrupted download",
		Long: `Download a completed export, resuming an interrupted download.

The bytes go to FILE.part, which is renamed to FILE once its SHA-256 matches
the export's checksum. An interrupted download leaves FILE.part: run the same
command again and it fetches only the rest ("resuming at N of M bytes"). So
FILE exists only complete and verified:

  - FILE exists with the export's size: it is only verified (nothing fetched).
  - FILE exists with another size: exit 1, unless -f (download it again).
  - FILE.part shorter than the export: the rest is appended, then the whole
    file is verified.
  - FILE.part that does not match (its bytes are not the export's): exit 10;
    FILE.part is left for inspection: remove it (or pass -f) and run again.

New files are created with mode 0600: exports hold users' data. With -o -
the bytes go to stdout from the start (no resume), verified as they stream:
on a mismatch the bytes are already out, and the exit code is 10.

An export that has not completed exits 4; 'exportctl wait ID' first.`,
		ValidArgsFunction: a.completeID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.download(cmd.Context(), args, o) },
	}
	flags := cmd.Flags()
	flags.StringVarP(&o.out, "output", "o", "", "write to `FILE` (by way of FILE.part), or - for stdout (required)")
	flags.BoolVarP(&o.force, "force", "f", false, "start over: replace FILE and FILE.part")
	flags.BoolVarP(&o.quiet, "quiet", "q", false, "no progress or summary on stderr")
	return cmd
}

type downloadOptions struct {
	out   string
	force bool
	quiet bool
}

func (a *app) download(ctx context.Context, args []string, o *downloadOptions) error {
	id, err := oneID("download", args)
	if err != nil {
		return err
	}
	if o.out == "" {
		return usageErrorf("download", "-o FILE is required (-o - for stdout)")
	}
	c, err := a.connect(ctx, exporter.Config{})
	if err != nil {
		return err
	}
	// The Download reads under the context OpenExport gets, so that one
	// cannot carry a deadline; -timeout bounds the opening alone.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(a.timeout, cancel)
	d, err := c.exp.OpenExport(dctx, c.user, id)
	if err == nil {
		defer d.Close()
	}
	if !timer.Stop() && ctx.Err() == nil {
		return fmt.Errorf("open %s: %w", id, context.DeadlineExceeded)
	}
	if err != nil {
		return err
	}
	if o.out == "-" {
		return a.downloadStdout(d, o)
	}
	return a.downloadFile(d, o)
}

// downloadStdout streams the whole export to stdout. The Download
// verifies a read from offset 0 itself; the sum here says so in the
// summary and catches what it would not.
func (a *app) downloadStdout(d *exporter.Download, o *downloadOptions) error {
	job := d.Job()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(a.stdout, h)}
	m := a.downloadMeter(o, job, 0, &cw.n)
	n, err := io.Copy(cw, d)
	m.Stop()
	if err != nil {
		return fmt.Errorf("download %s: %w (%d bytes written to stdout)", job.ID, err, n)
	}
	if err := checkSum(h, job); err != nil {
		return codedErrorf(exitCorrupt, "download %s: %v: the %d bytes written to stdout are not the export", job.ID, err, n)
	}
	if !o.quiet {
		fmt.Fprintf(a.stderr, "downloaded %s to stdout: %s, %s verified\n", job.ID, formatBytes(n), job.Checksum)
	}
	return nil
}

func (a *app) downloadFile(d *exporter.Download, o *downloadOptions) error {
	job := d.Job()
	size := d.Size()
	out, part := o.out, o.out+".part"

	if fi, err := os.Stat(out); err == nil && !o.force {
		switch {
		case fi.IsDir():
			return usageErrorf("download", "-o %s is a directory", out)
		case fi.Size() != size:
			return fmt.Errorf("%s exists (%d bytes) and is not this export (%d bytes): remove it, pass -f to replace it, or rename it to %s to resume into it",
				out, fi.Size(), size, part)
		}
		// Downloaded before, it seems: verify, fetch nothing.
		if err := verifyFile(out, job); err != nil {
			return codedErrorf(exitCorrupt, "%s has the export's size but %v; it is left as it is", out, err)
		}
		if !o.quiet {
			fmt.Fprintf(a.stderr, "%s is already downloaded: %s, %s verified\n", out, formatBytes(size), job.Checksum)
		}
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	flags := os.O_RDWR | os.O_CREATE
	if o.force {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(part, flags, 0o600)
	if err != nil {
		return err
	}
	defer f.Close() // after a successful Close below, a harmless error
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	have := fi.Size()
	if have > size {
		return codedErrorf(exitCorrupt, "%s holds %d bytes, more than the export's %d: it is not a part of this export; remove it (or pass -f) and run again",
			part, have, size)
	}

	// The file's sum: the bytes already there, then the new ones as they
	// are written.
	h := sha256.New()
	if have > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, have)); err != nil {
			return fmt.Errorf("read %s: %w", part, err)
		}
		if !o.quiet {
			if have < size {
				fmt.Fprintf(a.stderr, "resuming at %d of %d bytes (%s)\n", have, size, part)
			} else {
				fmt.Fprintf(a.stderr, "%s holds all %d bytes: verifying\n", part, size)
			}
		}
	}
	var fetched int64
	if have < size {
		if _, err := f.Seek(have, io.SeekStart); err != nil {
			return err
		}
		if _, err := d.Seek(have, io.SeekStart); err != nil {
			return err
		}
		cw := &countingWriter{w: io.MultiWriter(f, h)}
		m := a.downloadMeter(o, job, have, &cw.n)
		fetched, err = io.Copy(cw, d)
		m.Stop()
		if err != nil {
			// What reached the file stays for the next run to resume from.
			serr := f.Sync()
			return errors.Join(fmt.Errorf("download %s: %w; %s holds %d of %d bytes: run the command again to resume",
				job.ID, err, part, have+fetched, size), serr)
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := checkSum(h, job); err != nil {
		how := "the bytes fetched"
		if have > 0 {
			how = fmt.Sprintf("the %d bytes that were already in it", have)
		}
		return codedErrorf(exitCorrupt, "%s: %v; %s left in place (%s are the likely culprit): remove it and download again",
			part, err, part, how)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(part, out); err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintf(a.stderr, "downloaded %s to %s: %s (fetched %d bytes), %s verified\n",
			job.ID, out, formatBytes(size), fetched, job.Checksum)
	}
	return nil
}

func (a *app) downloadMeter(o *downloadOptions, job *exporter.Job, have int64, n *atomic.Int64) *meter {
	if o.quiet {
		return nil
	}
	return startMeter(a.stderr, "download "+job.ID[:8], job.Bytes, have, n)
}

// checkSum compares h's sum with the job's checksum.
func checkSum(h hash.Hash, job *exporter.Job) error {
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if got != job.Checksum {
		return fmt.Errorf("checksum mismatch: the file's is %s, the export's %s", got, job.Checksum)
	}
	return nil
}

// verifyFile checks the SHA-256 of the file at path against the job's.
func verifyFile(path string, job *exporter.Job) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	return checkSum(h, job)
}
