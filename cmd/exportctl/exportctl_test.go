package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/exporterkit/exporter"
	"github.com/exporterkit/exporter/internal/redistest"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestUsage covers what needs no Redis: help, usage errors, malformed ids,
// local file errors. The -redis address is a closed port, so a command
// that tried to connect would exit 1, not the code wanted.
func TestUsage(t *testing.T) {
	t.Parallel()
	redis := "redis://" + closedPort(t)
	id := uuid.NewString()
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // a substring, if not ""
		stderr     string
		emptyStdio bool // stdout must be empty
	}{
		{name: "no command", args: nil, code: exitUsage, stderr: "Usage:", emptyStdio: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`, emptyStdio: true},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "Exit codes:"},
		{name: "-h", args: []string{"-h"}, code: exitOK, stdout: "download ID -o FILE|-"},
		{name: "--help", args: []string{"--help"}, code: exitOK, stdout: "Commands:"},
		{name: "help start", args: []string{"help", "start"}, code: exitOK, stdout: "-max-bytes"},
		{name: "start -h", args: []string{"start", "-h"}, code: exitOK, stdout: "this process as its worker"},
		{name: "help of nothing", args: []string{"help", "frobnicate"}, code: exitUsage, stderr: "not a command"},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: "exportctl "},
		{name: "bad global flag", args: []string{"-frobnicate", "list"}, code: exitUsage, stderr: "flag provided but not defined", emptyStdio: true},
		{name: "bad command flag", args: []string{"status", "-frobnicate", id}, code: exitUsage, stderr: "help status"},
		{name: "status without id", args: []string{"status"}, code: exitUsage, stderr: "want one export ID"},
		{name: "status with two ids", args: []string{"status", id, id}, code: exitUsage, stderr: "want one export ID"},
		{name: "malformed id", args: []string{"status", "not-an-id"}, code: exitUsage, stderr: `"not-an-id" is not an export id`},
		{name: "id of the wrong form", args: []string{"cancel", strings.ReplaceAll(id, "-", "")}, code: exitUsage, stderr: "is not an export id"},
		{name: "download without -o", args: []string{"download", id}, code: exitUsage, stderr: "-o FILE is required"},
		{name: "list with an argument", args: []string{"list", "everything"}, code: exitUsage, stderr: "takes no arguments"},
		{name: "list limit", args: []string{"list", "-limit", "0"}, code: exitUsage, stderr: "-limit must be 1 to 1000"},
		{name: "start without file", args: []string{"start"}, code: exitUsage, stderr: "want one FILE"},
		{name: "start bad size", args: []string{"start", "-total", "lots", "x"}, code: exitUsage, stderr: "not a size"},
		{name: "start missing file", args: []string{"start", "/nonexistent/exportctl-test"}, code: exitError, stderr: "no such file"},
		{name: "start directory", args: []string{"start", os.TempDir()}, code: exitUsage, stderr: "is a directory"},
		{name: "bad URL", args: []string{"-redis", "http://x", "status", id}, code: exitUsage, stderr: "-redis"},
		{name: "suggestion", args: []string{"statu", id}, code: exitUsage, stderr: `did you mean "status"?`, emptyStdio: true},
		{name: "bad flag, two dashes", args: []string{"list", "--frobnicate"}, code: exitUsage, stderr: "flag provided but not defined: -frobnicate"},
		{name: "flag without its value", args: []string{"download", id, "-o"}, code: exitUsage, stderr: "flag needs an argument: -output"},
		{name: "help download", args: []string{"help", "download"}, code: exitOK, stdout: "-o, --output FILE"},
		{name: "download --help", args: []string{"download", "--help"}, code: exitOK, stdout: "Usage:\n  exportctl [global flags] download [flags] ID -o FILE|-\n"},
		{name: "status -h", args: []string{"status", "-h"}, code: exitOK, stdout: "Global flags (before or after the command"},
		{name: "-help after the id", args: []string{"cancel", id, "-help"}, code: exitOK, stdout: "Exit codes:"},
		{name: "help completion", args: []string{"help", "completion"}, code: exitOK, stdout: "bash"},
		{name: "help completion bash", args: []string{"completion", "bash", "-h"}, code: exitOK, stdout: "source <(exportctl completion bash)"},
		{name: "completion bash", args: []string{"completion", "bash"}, code: exitOK, stdout: "# bash completion V2 for exportctl"},
		{name: "completion zsh", args: []string{"completion", "zsh"}, code: exitOK, stdout: "#compdef exportctl"},
		{name: "completion fish", args: []string{"completion", "fish"}, code: exitOK, stdout: "complete -c exportctl"},
		{name: "completion powershell", args: []string{"completion", "powershell"}, code: exitOK, stdout: "Register-ArgumentCompleter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runBinary(t, nil, append([]string{"-redis", redis}, tt.args...)...)
			require.Equal(t, tt.code, res.code, "%s", res)
			require.Contains(t, res.stdout, tt.stdout, "%s", res)
			require.Contains(t, res.stderr, tt.stderr, "%s", res)
			if tt.code != exitOK {
				require.True(t, strings.HasPrefix(res.stderr, "exportctl: "), "errors start with \"exportctl: \"\n%s", res)
			}
			if tt.emptyStdio {
				require.Empty(t, res.stdout)
			}
		})
	}
}

// TestRedisUnreachable: a closed port fails at once and a server that
// never answers fails at -timeout, both with exit 1 and a message that
// names the address.
func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, []byte("data"), 0o600))

	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		addr := closedPort(t)
		for _, args := range [][]string{{"status", id}, {"list"}, {"start", file}, {"download", id, "-o", "-"}} {
			res := runBinary(t, nil, append([]string{"-redis", "redis://" + addr, "-timeout", "5s"}, args...)...)
			require.Equal(t, exitError, res.code, "%s", res)
			require.Contains(t, res.stderr, "exportctl: cannot reach Redis at "+addr+": ", "%s", res)
			require.Contains(t, res.stderr, "connection refused")
			require.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line of error, no library logs:\n%s", res)
			require.Empty(t, res.stdout)
			require.Less(t, res.took, 5*time.Second)
		}
	})

	t.Run("no answer", func(t *testing.T) {
		t.Parallel()
		// A listener that accepts and never answers: Redis hung.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		accepted := make(chan net.Conn, 16)
		go func() {
			defer close(accepted)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		t.Cleanup(func() {
			l.Close()
			for c := range accepted {
				c.Close()
			}
		})
		res := runBinary(t, nil, "-redis", "redis://"+l.Addr().String(), "-timeout", "1s", "status", id)
		require.Equal(t, exitError, res.code, "%s", res)
		require.Contains(t, res.stderr, "cannot reach Redis at "+l.Addr().String())
		require.Contains(t, res.stderr, "timeout")
		require.GreaterOrEqual(t, res.took, time.Second)
		require.Less(t, res.took, 10*time.Second)
	})
}

// TestStartStatusDownload is the main path: a file exported by `start`,
// its status, and its download to a file and to stdout.
func TestStartStatusDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, data := e.randomFile("orders.csv", 3<<20+12345)

	res := e.want(exitOK, "start", path)
	require.Equal(t, 1, strings.Count(res.stdout, "\n"), "stdout is the id alone:\n%s", res)
	id := strings.TrimSpace(res.stdout)
	require.True(t, exporter.ValidID(id), "%s", res)
	require.Contains(t, res.stderr, "export "+id+" completed: ")
	require.Contains(t, res.stderr, sha256sum(data))

	// status, as JSON and for people; the global flag also after the
	// command, with one dash or two.
	for _, args := range [][]string{{"-json", "status", id}, {"status", "-json", id}, {"status", id, "-json"}, {"--json", "status", id}} {
		job := decodeJob(t, e.want(exitOK, args...).stdout)
		require.Equal(t, id, job.ID)
		require.Equal(t, exporter.StatusCompleted, job.Status)
		require.Equal(t, "alice", job.Owner)
		require.Equal(t, sha256sum(data), job.Checksum)
		require.Equal(t, int64(len(data)), job.Bytes)
		require.Equal(t, int64(len(data)), job.Total, "the file's size is the total")
		require.Equal(t, "orders.csv", job.Metadata["filename"])
		require.Equal(t, "text/csv; charset=utf-8", job.Metadata["content-type"])
	}
	human := e.want(exitOK, "status", id).stdout
	for _, re := range []string{
		`(?m)^id:\s+` + id + `$`,
		`(?m)^status:\s+completed$`,
		`(?m)^checksum:\s+` + sha256sum(data) + `$`,
		fmt.Sprintf(`(?m)^bytes:\s+%d of %d `, len(data), len(data)),
		`(?m)^progress:\s+100%$`,
		`(?m)^metadata:\s+filename=orders.csv$`,
		`(?m)^expires:\s+\S+ \(2\dh\d+m from now\)$`,
	} {
		require.Regexp(t, regexp.MustCompile(re), human)
	}

	// download to a file
	out := filepath.Join(e.dir, "out.csv")
	res = e.want(exitOK, "download", id, "-o", out)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "downloaded bytes differ")
	require.NoFileExists(t, out+".part")
	require.Contains(t, res.stderr, fmt.Sprintf("(fetched %d bytes), %s verified", len(data), sha256sum(data)))
	fi, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// again: verified, nothing fetched
	res = e.want(exitOK, "download", "-o", out, id)
	require.Contains(t, res.stderr, "is already downloaded")

	// to stdout
	res = e.want(exitOK, "download", id, "-o", "-")
	require.True(t, bytes.Equal(data, []byte(res.stdout)), "bytes on stdout differ")
	require.Contains(t, res.stderr, "verified")

	// -json start: the job at once, the ended job at the end.
	path2, data2 := e.randomFile("two.bin", 100_000)
	res = e.want(exitOK, "-json", "start", "-q", "-meta", "purpose=test", path2)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 2, "%s", res)
	first, last := decodeJob(t, lines[0]), decodeJob(t, lines[1])
	require.Equal(t, first.ID, last.ID)
	require.False(t, first.Status.Terminal())
	require.Equal(t, exporter.StatusCompleted, last.Status)
	require.Equal(t, sha256sum(data2), last.Checksum)
	require.Equal(t, "test", last.Metadata["purpose"])
	require.Empty(t, res.stderr, "-q: nothing on stderr")
}

// TestStartFromRedirectedStdin: `start - < file` knows the size.
func TestStartFromRedirectedStdin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, data := e.randomFile("in.bin", 500_000)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	res := e.runIn(f, "start", "-name", "named.bin", "-")
	require.Equal(t, exitOK, res.code, "%s", res)
	job := e.status(firstLine(res.stdout))
	require.Equal(t, exporter.StatusCompleted, job.Status)
	require.Equal(t, int64(len(data)), job.Total)
	require.Equal(t, sha256sum(data), job.Checksum)
	require.Equal(t, "named.bin", job.Metadata["filename"])
}

// TestDownloadResume covers the FILE.part rules: resume from a partial
// file, verify a complete one, refuse a file that is not the export.
func TestDownloadResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, data := e.randomFile("big.bin", 4<<20+777)
	id := e.startFile(path)
	size := len(data)
	half := size / 2

	t.Run("half a part", func(t *testing.T) {
		out := filepath.Join(e.dir, "half.bin")
		require.NoError(t, os.WriteFile(out+".part", data[:half], 0o600))
		res := e.want(exitOK, "download", id, "-o", out)
		require.Contains(t, res.stderr, fmt.Sprintf("resuming at %d of %d bytes", half, size))
		require.Contains(t, res.stderr, fmt.Sprintf("(fetched %d bytes)", size-half), "only the rest is fetched")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))
		require.NoFileExists(t, out+".part")
	})

	t.Run("complete part", func(t *testing.T) {
		out := filepath.Join(e.dir, "complete.bin")
		require.NoError(t, os.WriteFile(out+".part", data, 0o600))
		res := e.want(exitOK, "download", id, "-o", out)
		require.Contains(t, res.stderr, "holds all")
		require.Contains(t, res.stderr, "(fetched 0 bytes)")
		require.FileExists(t, out)
		require.NoFileExists(t, out+".part")
	})

	t.Run("corrupt part", func(t *testing.T) {
		out := filepath.Join(e.dir, "corrupt.bin")
		wrong := bytes.Clone(data[:half])
		wrong[half/2] ^= 0xff
		require.NoError(t, os.WriteFile(out+".part", wrong, 0o600))
		res := e.want(exitCorrupt, "download", id, "-o", out)
		require.Contains(t, res.stderr, "checksum mismatch")
		require.Contains(t, res.stderr, "left in place")
		require.NoFileExists(t, out)
		part, err := os.ReadFile(out + ".part")
		require.NoError(t, err)
		require.Equal(t, wrong, part[:half], "the bytes that were there are kept")
		require.True(t, bytes.Equal(data[half:], part[half:]), "the rest was appended")

		// Run again: still corrupt, nothing fetched; -f starts over.
		res = e.want(exitCorrupt, "download", id, "-o", out)
		require.Contains(t, res.stderr, "holds all")
		e.want(exitOK, "download", id, "-o", out, "-f")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))
	})

	t.Run("part longer than the export", func(t *testing.T) {
		out := filepath.Join(e.dir, "long.bin")
		require.NoError(t, os.WriteFile(out+".part", append(bytes.Clone(data), 0), 0o600))
		res := e.want(exitCorrupt, "download", id, "-o", out)
		require.Contains(t, res.stderr, "more than the export's")
	})

	t.Run("file of the same size but other bytes", func(t *testing.T) {
		out := filepath.Join(e.dir, "same-size.bin")
		other := make([]byte, size)
		require.NoError(t, os.WriteFile(out, other, 0o600))
		res := e.want(exitCorrupt, "download", id, "-o", out)
		require.Contains(t, res.stderr, "checksum mismatch")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, other, got, "left as it is")
	})

	t.Run("file of another size", func(t *testing.T) {
		out := filepath.Join(e.dir, "other.bin")
		require.NoError(t, os.WriteFile(out, data[:half], 0o600))
		res := e.want(exitError, "download", id, "-o", out)
		require.Contains(t, res.stderr, "is not this export")
		require.Contains(t, res.stderr, "-f")
		e.want(exitOK, "download", id, "-o", out, "-f")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, got))
	})
}

// TestNotFoundAndPermissions: unknown ids and other users' exports are
// not found; an admin sees them; listing another user needs -admin.
func TestNotFoundAndPermissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, _ := e.randomFile("mine.txt", 10_000)
	id := e.startFile(path)
	bob := e.as("bob")

	unknown := uuid.NewString()
	res := e.want(exitNotFound, "status", unknown)
	require.Contains(t, res.stderr, "exportctl: status "+unknown+": export not found")
	require.Empty(t, res.stdout)

	for _, args := range [][]string{
		{"status", id}, {"cancel", id}, {"wait", id}, {"watch", id}, {"download", id, "-o", "-"},
	} {
		res := bob.want(exitNotFound, args...)
		require.Contains(t, res.stderr, "not found")
		require.Empty(t, res.stdout)
	}
	require.Equal(t, exporter.StatusCompleted, decodeJob(t, bob.want(exitOK, "-admin", "-json", "status", id).stdout).Status)
	require.Equal(t, "alice", decodeJob(t, bob.want(exitOK, "-admin", "-json", "wait", id).stdout).Owner)

	// An id in upper case is the same id.
	require.Equal(t, id, e.status(strings.ToUpper(id)).ID)

	res = bob.want(exitPermission, "list", "-owner", "alice")
	require.Contains(t, res.stderr, "forbidden")
	require.Contains(t, res.stderr, "-admin")
	res = bob.want(exitOK, "-admin", "list", "-owner", "alice")
	require.Contains(t, res.stdout, id)

	res = e.as("").want(exitUsage, "status", id)
	require.Contains(t, res.stderr, "no user")
}

// TestCancelFinished: a completed export cannot be cancelled.
func TestCancelFinished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, _ := e.randomFile("done.txt", 10_000)
	id := e.startFile(path)
	res := e.want(exitFinished, "cancel", id)
	require.Contains(t, res.stderr, "exportctl: cancel "+id+": the export already completed: nothing to cancel")
	require.Regexp(t, `(?m)^status:\s+completed$`, res.stdout, "the job is printed as it is")
	res = e.want(exitFinished, "-json", "cancel", id)
	require.Equal(t, exporter.StatusCompleted, decodeJob(t, res.stdout).Status)
}

// TestCancelFromAnotherProcess: an export fed through a pipe that stays
// open, cancelled by a second process; the worker, a watcher and a waiter
// all exit 7.
func TestCancelFromAnotherProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startProcess(true, "start", "-name", "stream.bin", "-")
	worker.feed(3 * exporter.DefaultChunkSize)
	id := worker.line(20 * time.Second)
	require.True(t, exporter.ValidID(id), "first line %q", id)
	e.waitRunning(id, 2*exporter.DefaultChunkSize)

	res := e.want(exitNotReady, "download", id, "-o", filepath.Join(e.dir, "early.bin"))
	require.Contains(t, res.stderr, "not completed")
	require.NoFileExists(t, filepath.Join(e.dir, "early.bin.part"))

	watcher := e.startProcess(false, "watch", id)
	require.Contains(t, watcher.line(20*time.Second), "running")
	waiter := e.startProcess(false, "-json", "wait", id)
	jsonWatcher := e.startProcess(false, "-json", "watch", "-every", "100ms", id)
	require.Equal(t, exporter.StatusRunning, decodeJob(t, jsonWatcher.line(20*time.Second)).Status)

	res = e.want(exitOK, "cancel", id)
	require.Regexp(t, `(?m)^status:\s+cancelled$`, res.stdout)

	res = worker.wait(20 * time.Second)
	require.Equal(t, exitCancelled, res.code, "%s", res)
	require.Contains(t, res.stderr, "exportctl: export "+id+" cancelled after ")
	require.Equal(t, id+"\n", res.stdout)
	require.NotContains(t, res.stderr, "\r", "stderr is not a terminal: progress comes in plain lines")
	require.NotContains(t, res.stderr, "\x1b")

	res = watcher.wait(20 * time.Second)
	require.Equal(t, exitCancelled, res.code, "%s", res)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Contains(t, lines[len(lines)-1], "cancelled")

	res = waiter.wait(20 * time.Second)
	require.Equal(t, exitCancelled, res.code, "%s", res)
	require.Equal(t, exporter.StatusCancelled, decodeJob(t, res.stdout).Status)

	res = jsonWatcher.wait(20 * time.Second)
	require.Equal(t, exitCancelled, res.code, "%s", res)
	lines = strings.Split(strings.TrimSpace(res.stdout), "\n")
	for _, l := range lines {
		decodeJob(t, l)
	}
	require.Equal(t, exporter.StatusCancelled, decodeJob(t, lines[len(lines)-1]).Status)

	// Afterwards, too.
	e.want(exitCancelled, "wait", id)
	e.want(exitCancelled, "watch", id)
	e.want(exitOK, "cancel", id) // cancelling a cancelled export is fine
	require.Equal(t, exporter.StatusCancelled, e.status(id).Status)
	e.want(exitNotReady, "download", id, "-o", "-")
}

// TestStartInterrupted: Ctrl-C on start cancels its export.
func TestStartInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startProcess(true, "start", "-")
	worker.feed(2 * exporter.DefaultChunkSize)
	id := worker.line(20 * time.Second)
	e.waitRunning(id, exporter.DefaultChunkSize)

	// Ctrl-C on a watcher stops the watcher, not the export.
	watcher := e.startProcess(false, "watch", id)
	require.Contains(t, watcher.line(20*time.Second), "running")
	require.NoError(t, watcher.cmd.Process.Signal(os.Interrupt))
	res := watcher.wait(20 * time.Second)
	require.Equal(t, exitInterrupted, res.code, "%s", res)
	require.Contains(t, res.stderr, "exportctl: interrupted: stopped watching; export "+id+" carries on")
	require.Equal(t, exporter.StatusRunning, e.status(id).Status)

	require.NoError(t, worker.cmd.Process.Signal(os.Interrupt))
	res = worker.wait(20 * time.Second)
	require.Equal(t, exitCancelled, res.code, "%s", res)
	require.Contains(t, res.stderr, "exportctl: interrupted: export "+id+" cancelled")
	job := e.status(id)
	require.Equal(t, exporter.StatusCancelled, job.Status)
	e.want(exitCancelled, "wait", id)
}

// TestStartFailed: an export that passes -max-bytes fails (6); one whose
// size says so up front is refused (9).
func TestStartFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// From a pipe, the size is unknown until the bytes pass the limit.
	res := e.runIn(bytes.NewReader(make([]byte, 200_000)), "-json", "start", "-max-bytes", "64KiB", "-")
	require.Equal(t, exitFailed, res.code, "%s", res)
	require.Contains(t, res.stderr, "failed after")
	require.Contains(t, res.stderr, "too large")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 2, "%s", res)
	id := decodeJob(t, lines[0]).ID
	require.Equal(t, exporter.StatusFailed, decodeJob(t, lines[1]).Status)

	e.want(exitFailed, "wait", id)
	res = e.want(exitFailed, "-json", "watch", id)
	require.Equal(t, exporter.StatusFailed, decodeJob(t, res.stdout).Status)
	e.want(exitFinished, "cancel", id)
	e.want(exitNotReady, "download", id, "-o", "-")
	require.Equal(t, exporter.StatusFailed, e.status(id).Status, "status exits 0 whatever the status")

	// A file bigger than -max-bytes: refused at once, nothing recorded.
	path, _ := e.randomFile("big.bin", 3<<20)
	res = e.want(exitBusy, "start", "-max-bytes", "1MiB", path)
	require.Contains(t, res.stderr, "too large")
	require.Empty(t, res.stdout)
}

// TestLosingRedis: a start, a wait and a watch whose Redis goes away for
// good do not wait forever: each says it waits for Redis, then gives up
// with exit 1 about a lease after Redis stopped answering.
func TestLosingRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := redistest.StartT(t, redistest.Options{})
	e.addr = srv.Addr
	worker := e.startProcess(true, "-timeout", "2s", "start", "-name", "stream.bin", "-")
	worker.feed(2 * exporter.DefaultChunkSize)
	id := worker.line(20 * time.Second)
	e.waitRunning(id, exporter.DefaultChunkSize)
	waiter := e.startProcess(false, "wait", id)
	watcher := e.startProcess(false, "watch", id)
	require.Contains(t, watcher.line(20*time.Second), "running") // past its first read
	// The waiter prints nothing until the end: it is waiting once its
	// Exporter has subscribed to the events (the worker's and the
	// watcher's have too).
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	require.Eventually(t, func() bool {
		n, err := rdb.PubSubNumSub(context.Background(), e.prefix+"events").Result()
		return err == nil && n[e.prefix+"events"] == 3
	}, 20*time.Second, 20*time.Millisecond, "the three processes never all subscribed")

	require.NoError(t, srv.Kill())
	killed := time.Now()
	for name, p := range map[string]*process{"start": worker, "wait": waiter, "watch": watcher} {
		res := p.wait(exporter.DefaultLeaseTTL + 20*time.Second)
		require.Equal(t, exitError, res.code, "%s: %s", name, res)
		require.Contains(t, res.stderr, "waiting for Redis at "+srv.Addr, name)
		require.Contains(t, res.stderr, "lost Redis at "+srv.Addr, name)
		require.GreaterOrEqual(t, time.Since(killed), exporter.DefaultLeaseTTL, "%s gave up before a lease had passed", name)
	}
}

// TestList: newest first, pages, -all, -json, another owner.
func TestList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ids []string // oldest first
	for _, name := range []string{"a.txt", "b.txt", "c.txt"} {
		path, _ := e.randomFile(name, 20_000)
		ids = append(ids, e.startFile(path))
	}
	newestFirst := []string{ids[2], ids[1], ids[0]}
	listed := func(lines ...string) []string {
		var got []string
		for _, l := range lines {
			var page exporter.ExportList
			require.NoError(t, json.Unmarshal([]byte(l), &page), "not an ExportList: %q", l)
			for _, j := range page.Jobs {
				got = append(got, j.ID)
			}
		}
		return got
	}

	res := e.want(exitOK, "-json", "list")
	require.Equal(t, newestFirst, listed(strings.TrimSpace(res.stdout)))
	require.NotContains(t, res.stdout, `"next"`)

	res = e.want(exitOK, "list")
	rows := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, rows, 4, "%s", res)
	require.Regexp(t, `^ID\s+STATUS\s+BYTES\s+PROGRESS\s+CREATED\s+FILENAME$`, rows[0])
	for i, name := range []string{"c.txt", "b.txt", "a.txt"} {
		require.Regexp(t, `^`+newestFirst[i]+`\s+completed\s+19\.5 KiB\s+100%\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+`+name+`$`, rows[i+1])
	}

	// One page, then every page.
	res = e.want(exitOK, "list", "-limit", "1")
	require.Len(t, strings.Split(strings.TrimSpace(res.stdout), "\n"), 2)
	require.Contains(t, res.stderr, "more exports: add -cursor ")
	cursor := strings.Fields(strings.TrimPrefix(res.stderr, "more exports: add -cursor "))[0]
	cursor = strings.TrimSuffix(cursor, ",")
	res = e.want(exitOK, "-json", "list", "-limit", "2", "-cursor", cursor)
	require.Equal(t, newestFirst[1:], listed(strings.TrimSpace(res.stdout)))

	res = e.want(exitOK, "-json", "list", "-limit", "1", "-all")
	pages := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, pages, 3, "one ExportList per page")
	require.Equal(t, newestFirst, listed(pages...))
	res = e.want(exitOK, "list", "-all", "-limit", "2")
	require.Len(t, strings.Split(strings.TrimSpace(res.stdout), "\n"), 4)
	require.Empty(t, res.stderr)

	// Another user: an empty list of their own, alice's only as admin.
	res = e.as("bob").want(exitOK, "-json", "list")
	require.Empty(t, listed(strings.TrimSpace(res.stdout)))
	e.as("bob").want(exitPermission, "list", "-owner", "alice")
	res = e.as("bob").want(exitOK, "-admin", "-json", "list", "-owner", "alice")
	require.Equal(t, newestFirst, listed(strings.TrimSpace(res.stdout)))

	e.want(exitUsage, "list", "-cursor", "nonsense")
}

// TestCluster runs start, status and download on a 3-node Redis Cluster,
// addressed both ways: comma-separated addresses and -cluster.
func TestCluster(t *testing.T) {
	t.Parallel()
	if redisAddr == "" {
		t.Skip("redis-server is not installed")
	}
	if testing.Short() {
		t.Skip("-short: no cluster")
	}
	c := redistest.StartClusterT(t, 3)
	e := newEnv(t)
	path, data := e.randomFile("cluster.bin", 1<<20+3)
	for _, redis := range []string{
		"redis://" + strings.Join(c.Addrs, ","),
		"redis://" + c.Addrs[1],
	} {
		args := func(a ...string) []string {
			flags := []string{"-redis", redis, "-prefix", e.prefix, "-user", "alice"}
			if !strings.Contains(redis, ",") {
				flags = append(flags, "-cluster")
			}
			return append(flags, a...)
		}
		res := runBinary(t, nil, args("start", "-q", path)...)
		require.Equal(t, exitOK, res.code, "%s", res)
		id := firstLine(res.stdout)
		res = runBinary(t, nil, args("-json", "status", id)...)
		require.Equal(t, exitOK, res.code, "%s", res)
		require.Equal(t, sha256sum(data), decodeJob(t, res.stdout).Checksum)
		res = runBinary(t, nil, args("download", id, "-o", "-")...)
		require.Equal(t, exitOK, res.code, "%s", res)
		require.True(t, bytes.Equal(data, []byte(res.stdout)))
	}
}

// TestCompletion: the shell asks for completions with `exportctl
// __complete WORDS...` (what the script of `exportctl completion SHELL`
// runs at each Tab): the commands, the flags, and the user's export ids,
// which come from Redis.
func TestCompletion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path, _ := e.randomFile("orders.csv", 10_000)
	id := e.startFile(path)

	complete := func(words ...string) (lines []string, directive string) {
		t.Helper()
		res := e.want(exitOK, append([]string{"__complete"}, words...)...)
		lines = strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
		return lines[:len(lines)-1], lines[len(lines)-1]
	}
	lines, directive := complete("")
	require.Contains(t, lines, "download\tdownload a completed export, resuming an interrupted download")
	require.Contains(t, lines, "completion\tGenerate the autocompletion script for the specified shell")
	require.Equal(t, ":4", directive, "no file names for a command")

	for _, cmd := range []string{"status", "watch", "wait", "cancel", "download"} {
		lines, directive = complete(cmd, id[:4])
		require.Equal(t, []string{id + "\tcompleted orders.csv"}, lines, cmd)
		require.Equal(t, ":4", directive, cmd)
	}
	lines, _ = complete("status", "ffff")
	require.Empty(t, lines, "no id begins so")
	lines, _ = complete("status", id, "")
	require.Empty(t, lines, "one id only")
	require.NotContains(t, e.as("bob").want(exitOK, "__complete", "status", "").stdout, id, "bob's ids only")

	lines, directive = complete("download", id, "-o", "")
	require.Empty(t, lines)
	require.Equal(t, ":0", directive, "-o completes file names")
	lines, directive = complete("start", "")
	require.Empty(t, lines)
	require.Equal(t, ":0", directive, "start completes file names")
	lines, _ = complete("list", "--l")
	require.Contains(t, lines, "--limit\texports per page, 1 to 1000")

	// Without Redis there is nothing to offer, and no error.
	res := runBinary(t, nil, "-redis", "redis://"+closedPort(t), "-user", "alice", "__complete", "status", "")
	require.Equal(t, exitOK, res.code, "%s", res)
	require.Equal(t, ":4\n", res.stdout)
}
