// Command exportctl is the operator's tool for the exports of
// github.com/exporterkit/exporter: it starts an export of a file (this
// process is its worker), shows, follows, waits for, cancels, lists and
// downloads exports stored in Redis.
//
//	exportctl -redis redis://127.0.0.1:6379/0 start orders.csv
//	exportctl status 0b7c1e2f-...
//	exportctl download 0b7c1e2f-... -o orders.csv
//
// Run `exportctl help` for the commands, flags and exit codes; README.md
// next to this file has a session.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default action returns: a second Ctrl-C
	// ends the process at once, even while start is cancelling its export.
	context.AfterFunc(ctx, stop)
	// A closed stdout (exportctl ... | head) is a write error that the
	// commands report, not a silent death by SIGPIPE halfway through a
	// start's clean-up.
	signal.Ignore(syscall.SIGPIPE)
	// go-redis logs failed dials on its own; the error that reaches the
	// command says the same once, as "exportctl: cannot reach Redis ...".
	redis.SetLogger(discardLogger{})
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// globals are the flags every command accepts, before or after its name.
type globals struct {
	redis   string
	cluster bool
	user    string
	admin   bool
	prefix  string
	json    bool
	timeout time.Duration
	verbose bool
}

// app is one run of the tool: its flags, its streams and, once connect has
// run, its Redis client and Exporter.
type app struct {
	globals
	stdin          io.Reader
	stdout, stderr io.Writer
	conn           *conn // nil until connect
}

// command is a subcommand. setup registers its flags on fs and returns the
// function that runs it with the positional arguments.
type command struct {
	name    string
	args    string // synopsis after the name
	summary string
	help    string // more lines for `exportctl help <name>`
	setup   func(fs *flag.FlagSet, a *app) func(ctx context.Context, args []string) error
}

// commands in the order help lists them.
var commands = []*command{
	startCommand, statusCommand, watchCommand, waitCommand,
	cancelCommand, downloadCommand, listCommand,
	{name: "help", args: "[COMMAND]", summary: "show this help, or a command's"},
	{name: "version", summary: "print exportctl's version"},
}

func lookup(name string) *command {
	i := slices.IndexFunc(commands, func(c *command) bool { return c.name == name })
	if i < 0 {
		return nil
	}
	return commands[i]
}

// run is the whole tool but for the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	top := flag.NewFlagSet("exportctl", flag.ContinueOnError)
	top.SetOutput(io.Discard) // usage and errors are printed below
	a.globals.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(stdout, top)
			return exitOK
		}
		return a.fail(usageErrorf("", "%v", err))
	}
	rest := top.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, "exportctl: no command\n\n")
		a.usage(stderr, top)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	switch name {
	case "help":
		if len(rest) == 0 {
			a.usage(stdout, top)
			return exitOK
		}
		c := lookup(rest[0])
		if c == nil || c.setup == nil {
			return a.fail(usageErrorf("", "no help for %q: it is not a command", rest[0]))
		}
		fs, _ := a.setupCommand(c, top)
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	case "version":
		fmt.Fprintln(stdout, version())
		return exitOK
	}
	c := lookup(name)
	if c == nil || c.setup == nil {
		fmt.Fprintf(stderr, "exportctl: unknown command %q\n\n", name)
		a.usage(stderr, top)
		return exitUsage
	}
	fs, runCmd := a.setupCommand(c, top)
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return a.fail(usageErrorf(c.name, "%v", err))
	}
	err = runCmd(ctx, pos)
	if a.conn != nil {
		if cerr := a.conn.close(a.timeout); cerr != nil {
			if err == nil {
				return a.fail(cerr)
			}
			fmt.Fprintf(stderr, "exportctl: %s\n", message(cerr))
		}
	}
	return a.fail(err)
}

// fail prints err, if any, as "exportctl: <message>" and returns its exit
// code.
func (a *app) fail(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(a.stderr, "exportctl: %s\n", message(err))
	var u *usageError
	if errors.As(err, &u) {
		if u.cmd != "" {
			fmt.Fprintf(a.stderr, "Run 'exportctl help %s' for its usage.\n", u.cmd)
		} else {
			fmt.Fprintln(a.stderr, "Run 'exportctl help' for usage.")
		}
	}
	return exitCode(err)
}

func (g *globals) register(fs *flag.FlagSet) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	fs.StringVar(&g.redis, "redis", redisURL,
		"Redis `URL` (redis:// or rediss://; $REDIS_URL); several comma-separated addresses mean a Cluster")
	fs.BoolVar(&g.cluster, "cluster", false, "connect to a Redis Cluster through the -redis address")
	fs.StringVar(&g.user, "user", defaultUser(), "act as user `ID` ($EXPORTCTL_USER, else the OS user name)")
	fs.BoolVar(&g.admin, "admin", false, "act with the admin permission "+adminPermission+": see, cancel and download anyone's exports")
	fs.StringVar(&g.prefix, "prefix", defaultPrefix, "Redis key `prefix` of the exports")
	fs.BoolVar(&g.json, "json", false, "print results as JSON, one object per line")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "time limit of each Redis call that is not a stream (status, cancel, a list page, connecting)")
	fs.BoolVar(&g.verbose, "v", false, "log the exporter's records on stderr")
}

// defaultUser is $EXPORTCTL_USER, else the OS user's name, else $USER.
func defaultUser() string {
	if u := os.Getenv("EXPORTCTL_USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// setupCommand returns c's flag set and runner: c's flags and, after
// them, the global ones, which share their values with top's so that
// either place sets them.
func (a *app) setupCommand(c *command, top *flag.FlagSet) (*flag.FlagSet, func(context.Context, []string) error) {
	fs := flag.NewFlagSet("exportctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by fail, help by run
	runCmd := c.setup(fs, a)
	own := flag.NewFlagSet("", flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) { own.Var(f.Value, f.Name, f.Usage) })
	top.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: exportctl [global flags] %s [flags] %s\n\n%s.\n", c.name, c.args, capitalize(c.summary))
		if c.help != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
		}
		if hasFlags(own) {
			fmt.Fprintln(w, "\nFlags:")
			own.SetOutput(w)
			own.PrintDefaults()
		}
		printGlobals(w, top)
		fmt.Fprintf(w, "\n%s", exitCodesHelp)
	}
	return fs, runCmd
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parseInterspersed parses fs's flags anywhere among args, as `download ID
// -o FILE` needs (package flag stops at the first argument that is not a
// flag), and returns the other arguments in order. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := args[:len(args)-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" && !flagValue(fs, consumed) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagValue reports whether the last of consumed is the value of the flag
// before it ("-name --") rather than the end of the flags.
func flagValue(fs *flag.FlagSet, consumed []string) bool {
	if len(consumed) < 2 {
		return false
	}
	prev := strings.TrimLeft(consumed[len(consumed)-2], "-")
	if prev == "" || strings.Contains(prev, "=") {
		return false
	}
	f := fs.Lookup(prev)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

func (a *app) usage(w io.Writer, top *flag.FlagSet) {
	fmt.Fprint(w, `exportctl starts, follows, cancels, lists and downloads the exports of
github.com/exporterkit/exporter kept in Redis.

Usage:
  exportctl [global flags] <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-26s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	printGlobals(w, top)
	fmt.Fprintf(w, "\n%s\nRun 'exportctl help <command>' for a command's flags.\n", exitCodesHelp)
}

// printGlobals prints the global flags, with any password in the -redis
// default (from $REDIS_URL) masked.
func printGlobals(w io.Writer, top *flag.FlagSet) {
	fmt.Fprintln(w, "\nGlobal flags (before or after the command):")
	if f := top.Lookup("redis"); f != nil {
		f.DefValue = redactURLs(f.DefValue)
	}
	top.SetOutput(w)
	top.PrintDefaults()
	top.SetOutput(io.Discard)
}

// version is the module version and VCS revision the binary was built from.
func version() string {
	v := "exportctl (unknown version)"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v = "exportctl " + bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += " (modified)"
			}
		}
	}
	return v + " " + bi.GoVersion
}
