package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
)

// The tests in this file call the tool's functions in-process; the others
// run the built binary.

func TestExitCode(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("exporter: status x: %w", err) }
	tests := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("dial tcp: connection refused"), 1},
		{context.DeadlineExceeded, 1},
		{usageErrorf("list", "bad"), 2},
		{wrap(exporter.ErrInvalid), 2},
		{wrap(exporter.ErrNotFound), 3},
		{wrap(exporter.ErrNotReady), 4},
		{wrap(exporter.ErrFinished), 5},
		{wrap(exporter.ErrWorkerLost), 6},
		{wrap(exporter.ErrCancelled), 7},
		{wrap(exporter.ErrUnauthenticated), 8},
		{wrap(exporter.ErrForbidden), 8},
		{wrap(exporter.ErrBusy), 9},
		{wrap(exporter.ErrTooLarge), 9},
		{wrap(exporter.ErrCorrupt), 10},
		{codedErrorf(exitCorrupt, "mismatch"), 10},
		{fmt.Errorf("watch: %w", context.Canceled), 130},
		{terminalOutcome(&exporter.Job{Status: exporter.StatusFailed}), 6},
		{terminalOutcome(&exporter.Job{Status: exporter.StatusCancelled}), 7},
		{terminalOutcome(&exporter.Job{Status: exporter.StatusCompleted}), 0},
	}
	for _, tt := range tests {
		require.Equal(t, tt.code, exitCode(tt.err), "%v", tt.err)
	}
}

func TestMessage(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("exporter: status abc: %w", exporter.ErrNotFound)
	require.Equal(t, "status abc: export not found (unknown, expired, or another user's; an admin sees every export with -admin)", message(err))
	require.Equal(t, "x: interrupted", message(fmt.Errorf("x: %w", context.Canceled)))
	require.Equal(t, "worker lost", cleanReason("exporter: worker lost"), "a record stored before reason codes")
	require.Equal(t, "worker lost", cleanReason(exporter.ErrWorkerLost.Error()))
}

// TestFlagSyntax: flags take one dash or two, mix with the arguments
// anywhere, and "--" ends them, as when package flag parsed them. The
// arguments go through longFlags and the download command's pflag set, as
// in a run.
func TestFlagSyntax(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		pos  []string
		out  string
		json bool
	}{
		{[]string{"ID", "-o", "f"}, []string{"ID"}, "f", false},
		{[]string{"-o", "f", "ID"}, []string{"ID"}, "f", false},
		{[]string{"ID", "-json", "-o=f"}, []string{"ID"}, "f", true},
		{[]string{"ID", "--json", "--output", "f"}, []string{"ID"}, "f", true},
		{[]string{"-", "-json"}, []string{"-"}, "", true},
		{[]string{"-json", "--", "-o", "x"}, []string{"-o", "x"}, "", true},
		{[]string{"-o", "--", "ID"}, []string{"ID"}, "--", false},
		{[]string{"-o", "-json", "ID"}, []string{"ID"}, "-json", false},
		{[]string{"a", "b", "-json", "c"}, []string{"a", "b", "c"}, "", true},
	}
	for _, tt := range tests {
		a := &app{}
		root := a.newRoot()
		cmd, _, err := root.Find([]string{"download"})
		require.NoError(t, err)
		require.NoError(t, cmd.ParseFlags(longFlags(root, tt.args)), "%q", tt.args)
		out, err := cmd.Flags().GetString("output")
		require.NoError(t, err)
		require.Equal(t, tt.pos, cmd.Flags().Args(), "%q", tt.args)
		require.Equal(t, tt.out, out, "%q", tt.args)
		require.Equal(t, tt.json, a.json, "%q", tt.args)
	}

	root := (&app{}).newRoot()
	require.Equal(t, []string{"--redis", "-x", "--timeout=1s", "-v", "status", "--", "-json"},
		longFlags(root, []string{"-redis", "-x", "-timeout=1s", "-v", "status", "--", "-json"}))
	require.Equal(t, []string{"__complete", "--redis", "u", "status", "-js"},
		longFlags(root, []string{"__complete", "-redis", "u", "status", "-js"}),
		"the word being completed stays as typed")
	require.NotNil(t, longFlags(root, nil), "cobra reads os.Args for nil")
}

// TestFlagsWithValues: longFlags looks a flag up by name among every
// command's, so a name must take a value everywhere or nowhere.
func TestFlagsWithValues(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			for _, name := range []string{f.Name, f.Shorthand} {
				if name == "" {
					continue
				}
				takes := f.NoOptDefVal == ""
				if was, ok := seen[name]; ok {
					require.Equal(t, was, takes, "flag %s of %s", name, c.CommandPath())
				}
				seen[name] = takes
			}
		}
		c.Flags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk((&app{}).newRoot())
	require.True(t, seen["redis"])
	require.True(t, seen["o"])
	require.False(t, seen["json"])
	require.False(t, seen["q"])
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "1MiB": 1 << 20, "1.5GiB": 3 << 29, "64k": 64 << 10,
		"2MB": 2e6, "10 KiB": 10 << 10, "7B": 7, "256M": 256 << 20,
	} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "lots", "-1", "1XB", "1e30"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
	s := sizeFlag{n: exporter.DefaultMaxBytes, set: true}
	require.Equal(t, "256MiB", s.String())
}

func TestValidID(t *testing.T) {
	t.Parallel()
	require.True(t, exporter.ValidID("0b7c1e2f-4a5d-4c3b-9e8f-1a2b3c4d5e6f"))
	for _, id := range []string{"", "0b7c1e2f4a5d4c3b9e8f1a2b3c4d5e6f", "0B7C1E2F-4A5D-4C3B-9E8F-1A2B3C4D5E6F",
		"0b7c1e2f-4a5d-4c3b-9e8f-1a2b3c4d5e6", "0b7c1e2f-4a5d-4c3b-9e8f-1a2b3c4d5e6g", "../../etc/passwd"} {
		require.False(t, exporter.ValidID(id), id)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3<<20 + 1<<19: "3.5 MiB", 5 << 40: "5.0 TiB"} {
		require.Equal(t, want, formatBytes(n))
	}
	require.Equal(t, "24h0m", formatDuration(24*time.Hour+20*time.Second))
	require.Equal(t, "850ms", formatDuration(850*time.Millisecond))
	require.Equal(t, "3m4s", formatDuration(3*time.Minute+4*time.Second+300*time.Millisecond))
	require.Equal(t, "-", formatProgress(&exporter.Job{Status: exporter.StatusRunning, Bytes: 10}))
	require.Equal(t, "50%", formatProgress(&exporter.Job{Status: exporter.StatusRunning, Bytes: 5, Total: 10}))
	require.Equal(t, "100%", formatProgress(&exporter.Job{Status: exporter.StatusCompleted, Bytes: 10}))
}

func TestRedisURLs(t *testing.T) {
	t.Parallel()
	c, addr, err := newRedisClient("127.0.0.1:7000", false)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7000", addr)
	require.NoError(t, c.Close())

	c, addr, err = newRedisClient("redis://u:pw@10.0.0.1:7000,10.0.0.2:7001, redis://10.0.0.3:7002", false)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002", addr)
	require.NoError(t, c.Close())

	_, _, err = newRedisClient("redis://u:secret@h:notaport/0", false)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
	require.Equal(t, exitUsage, exitCode(err))

	require.Equal(t, "redis://u:xxxxx@h:1/0,redis://h2:2", redactURLs("redis://u:secret@h:1/0,redis://h2:2"))
}

func TestMeterLine(t *testing.T) {
	t.Parallel()
	m := &meter{label: "export 0b7c1e2f", total: 10 << 20, base: 2 << 20}
	require.Equal(t, "export 0b7c1e2f: 4.0 MiB of 10.0 MiB (40%), 1.0 MiB/s, 6s left\n", m.line(2<<20, 2*time.Second))
	m.tty = true
	require.Equal(t, "\rexport 0b7c1e2f [=========>              ]  40% 4.0 MiB of 10.0 MiB  1.0 MiB/s  6s left\x1b[K", m.line(2<<20, 2*time.Second))
	require.Equal(t, "\rexport 0b7c1e2f [========================] 100% 10.0 MiB of 10.0 MiB  4.0 MiB/s\x1b[K", m.line(8<<20, 2*time.Second))
	m = &meter{label: "export 0b7c1e2f"}
	require.Equal(t, "export 0b7c1e2f: 512 B, 256 B/s\n", m.line(512, 2*time.Second))
}

// TestDurableJobShown: status and watch show a durable export's kind and
// attempt, and a failure's code.
func TestDurableJobShown(t *testing.T) {
	t.Parallel()
	now := time.Now()
	job := &exporter.Job{ID: "9b2f0d8e-2c1a-4e55-9a3b-6e1d2c3b4a59", Owner: "alice", Status: exporter.StatusRunning,
		Kind: "rows", Attempt: 2, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour)}
	var b strings.Builder
	require.NoError(t, writeJob(&b, job, now))
	require.Contains(t, b.String(), "kind:      rows (durable), attempt 2")
	require.Contains(t, jobLine(job, now), "attempt 2")
	job.Status, job.Error, job.ErrorCode = exporter.StatusFailed, "source Read panicked: boom", exporter.CodeSource
	b.Reset()
	require.NoError(t, writeJob(&b, job, now))
	require.Contains(t, b.String(), "error code:")
	require.Contains(t, b.String(), "source")
}
