// Command exportctl is the operator's tool for the exports of
// github.com/exporterkit/exporter: it starts an export of a file (this
// process is its worker), shows, follows, waits for, cancels, lists and
// downloads exports stored in Redis.
//
//	exportctl -redis redis://127.0.0.1:6379/0 start orders.csv
//	exportctl status 0b7c1e2f-...
//	exportctl download 0b7c1e2f-... -o orders.csv
//
// Run `exportctl help` for the commands, flags and exit codes, and
// `exportctl completion --help` for shell completion; README.md next to
// this file has a session.
//
// The tool is a module of its own, github.com/exporterkit/exporter/cmd/exportctl,
// so that its requirements (cobra for the commands) never become the
// library's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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

func init() {
	// Help lists the commands in the order they are added, the order of
	// a session (start, status, watch, ...), not the alphabet's.
	cobra.EnableCommandSorting = false
}

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

// app is one run of the tool: its flags, its streams, its commands and,
// once connect has run, its Redis client and Exporter.
type app struct {
	globals
	stdin          io.Reader
	stdout, stderr io.Writer
	root           *cobra.Command
	conn           *conn // nil until connect
}

// run is the whole tool but for the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	a.root = a.newRoot()
	a.root.SetArgs(longFlags(a.root, args))
	_, err := a.root.ExecuteContextC(ctx)
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

// newRoot returns the tool's command tree: the root, which holds the
// global flags, and a command per verb, cobra's completion command and a
// help command that fails on what is not a command.
func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use: "exportctl",
		Long: `exportctl starts, follows, cancels, lists and downloads the exports of
github.com/exporterkit/exporter kept in Redis.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return &usageError{msg: msg, showUsage: true}
		},
		RunE: func(*cobra.Command, []string) error {
			return &usageError{msg: "no command", showUsage: true}
		},
		// fail prints errors, and the usage where it helps.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	a.globals.register(root.PersistentFlags())
	root.SetFlagErrorFunc(flagError)
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) { writeHelp(cmd.OutOrStdout(), cmd) })
	root.SetUsageFunc(func(cmd *cobra.Command) error { return writeUsage(cmd.OutOrStderr(), cmd) })
	root.AddCommand(a.startCommand(), a.statusCommand(), a.watchCommand(), a.waitCommand(),
		a.cancelCommand(), a.downloadCommand(), a.listCommand())
	root.InitDefaultCompletionCmd()
	root.AddCommand(&cobra.Command{
		Use:               "version",
		Short:             "print exportctl's version",
		ValidArgsFunction: cobra.NoFileCompletions,
		Run:               func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version()) },
	})
	root.SetHelpCommand(&cobra.Command{
		Use:               "help [COMMAND]",
		Short:             "show this help, or a command's",
		ValidArgsFunction: completeCommand,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return root.Help()
			}
			c, _, err := root.Find(args)
			if err != nil || c == root {
				return usageErrorf("", "no help for %q: it is not a command", strings.Join(args, " "))
			}
			c.InitDefaultHelpFlag() // listed with the command's flags
			return c.Help()
		},
	})
	return root
}

// completeCommand completes the argument of help with the commands.
func completeCommand(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, c := range cmd.Root().Commands() {
		if c.IsAvailableCommand() && strings.HasPrefix(c.Name(), toComplete) {
			names = append(names, cobra.CompletionWithDesc(c.Name(), c.Short))
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// fail prints err, if any, as "exportctl: <message>" and returns its exit
// code.
func (a *app) fail(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(a.stderr, "exportctl: %s\n", message(err))
	if u, ok := errors.AsType[*usageError](err); ok {
		switch {
		case u.showUsage:
			fmt.Fprintln(a.stderr)
			writeUsage(a.stderr, a.root)
		case u.cmd != "":
			fmt.Fprintf(a.stderr, "Run 'exportctl help %s' for its usage.\n", u.cmd)
		default:
			fmt.Fprintln(a.stderr, "Run 'exportctl help' for usage.")
		}
	}
	return exitCode(err)
}

// flagError is the usage error of err, a mistake that pflag found in the
// flags of cmd, worded as package flag words it (exportctl parsed its
// flags with package flag before cobra, and scripts may match the text).
func flagError(cmd *cobra.Command, err error) error {
	name := commandName(cmd)
	if e, ok := errors.AsType[*pflag.NotExistError](err); ok {
		return usageErrorf(name, "flag provided but not defined: -%s", e.GetSpecifiedName())
	}
	if e, ok := errors.AsType[*pflag.ValueRequiredError](err); ok {
		return usageErrorf(name, "flag needs an argument: -%s", e.GetFlag().Name)
	}
	if e, ok := errors.AsType[*pflag.InvalidValueError](err); ok {
		return usageErrorf(name, "invalid value %q for flag -%s: %v", e.GetValue(), e.GetFlag().Name, e.Unwrap())
	}
	return usageErrorf(name, "%v", err)
}

// commandName is cmd's path below the root ("start", "completion bash"),
// "" for the root itself.
func commandName(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return ""
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

func (g *globals) register(fs *pflag.FlagSet) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	fs.StringVar(&g.redis, "redis", redisURL,
		"Redis `URL` (redis:// or rediss://; $REDIS_URL); several comma-separated addresses mean a Cluster")
	// Help shows the default with any password in it (from $REDIS_URL)
	// masked; DefValue serves nothing else.
	fs.Lookup("redis").DefValue = redactURLs(redisURL)
	fs.BoolVar(&g.cluster, "cluster", false, "connect to a Redis Cluster through the -redis address")
	fs.StringVar(&g.user, "user", defaultUser(), "act as user `ID` ($EXPORTCTL_USER, else the OS user name)")
	fs.BoolVar(&g.admin, "admin", false, "act with the admin permission "+adminPermission+": see, cancel and download anyone's exports")
	fs.StringVar(&g.prefix, "prefix", defaultPrefix, "Redis key `prefix` of the exports")
	fs.BoolVar(&g.json, "json", false, "print results as JSON, one object per line")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "time limit of each Redis call that is not a stream (status, cancel, a list page, connecting)")
	fs.BoolVarP(&g.verbose, "verbose", "v", false, "log the exporter's records on stderr")
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

// longFlags returns args with each flag of a long name written with one
// dash (-json, -redis URL) written with two (--json, --redis URL).
// exportctl has always taken one dash, as package flag does, and scripts
// pass it so; pflag, which cobra parses with, reads "-json" as the
// shorthands -j -s -o -n. What stays as it is: a shorthand (-o, -q, -v,
// -h), "-" (stdin or stdout), what follows "--", and the value of a flag
// that takes one ("-o -x" writes to a file named -x). Which flags take a
// value is looked up among every command's flags. A shell's completion
// request (__complete) keeps its last word, the one being completed, as
// typed.
func longFlags(root *cobra.Command, args []string) []string {
	takesValue := flagsWithValues(root)
	completing := len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd)
	out := make([]string, 0, len(args)) // not nil: cobra would read os.Args
	valueNext := false
	for i, s := range args {
		switch {
		case valueNext:
			valueNext = false
		case s == "--":
			return append(out, args[i:]...)
		case strings.HasPrefix(s, "--"):
			name, _, hasValue := strings.Cut(s[2:], "=")
			valueNext = !hasValue && takesValue[name]
		case len(s) > 1 && s[0] == '-':
			name, _, hasValue := strings.Cut(s[1:], "=")
			if len(name) > 1 && !(completing && i == len(args)-1) {
				s = "-" + s
			}
			valueNext = !hasValue && takesValue[name]
		}
		out = append(out, s)
	}
	return out
}

// flagsWithValues returns which flags of root and its commands, by name
// and by shorthand, take a value (are not booleans).
func flagsWithValues(root *cobra.Command) map[string]bool {
	m := map[string]bool{}
	add := func(f *pflag.Flag) {
		m[f.Name] = f.NoOptDefVal == ""
		if f.Shorthand != "" {
			m[f.Shorthand] = f.NoOptDefVal == ""
		}
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return m
}

// writeHelp writes cmd's help: its description, then its usage.
func writeHelp(w io.Writer, cmd *cobra.Command) {
	desc := cmd.Long
	if desc == "" {
		desc = capitalize(cmd.Short) + "."
	}
	fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(desc))
	writeUsage(w, cmd)
}

// writeUsage writes cmd's synopsis, its commands, its flags and the global
// ones, as pflag lists them, and the exit codes.
func writeUsage(w io.Writer, cmd *cobra.Command) error {
	var b strings.Builder
	b.WriteString("Usage:\n")
	switch name := commandName(cmd); {
	case name == "":
		b.WriteString("  exportctl [global flags] <command> [flags] [arguments]\n")
	case cmd.HasAvailableSubCommands():
		fmt.Fprintf(&b, "  exportctl [global flags] %s <command> [flags]\n", name)
	default:
		_, args, _ := strings.Cut(cmd.Use, " ")
		fmt.Fprintf(&b, "  %s\n", strings.TrimSpace("exportctl [global flags] "+name+" [flags] "+args))
	}
	if cmd.HasAvailableSubCommands() {
		b.WriteString("\nCommands:\n")
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() || c.Name() == "help" {
				fmt.Fprintf(&b, "  %-26s %s\n", c.Use, c.Short)
			}
		}
	}
	global := cmd.InheritedFlags()
	if cmd.HasParent() {
		if local := cmd.LocalFlags(); local.HasAvailableFlags() {
			fmt.Fprintf(&b, "\nFlags:\n%s", local.FlagUsages())
		}
	} else {
		global = cmd.PersistentFlags()
	}
	if global.HasAvailableFlags() {
		fmt.Fprintf(&b, "\nGlobal flags (before or after the command; -name and --name are the same):\n%s", global.FlagUsages())
	}
	fmt.Fprintf(&b, "\n%s", exitCodesHelp)
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\nRun 'exportctl help %s' for a command's flags.\n", strings.TrimSpace(commandName(cmd)+" <command>"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
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
