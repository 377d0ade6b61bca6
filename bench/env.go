package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exporterkit/exporter"
)

// sizes are the workload sizes of a full or a -quick run.
type sizes struct {
	quick       bool
	exportBytes int           // W2, W2b, W5, M2
	w1Jobs      int           // W1
	w1Bytes     int           // W1, per job
	w3Duration  time.Duration // W3
	w3Jobs      int           // W3: completed jobs read round-robin
	w4Samples   int           // W4, per repetition
	m1Exports   int           // M1
	m3Pending   int           // M3
	concurrency int           // W1 and W3 goroutines
	sideTimeout time.Duration // one side of one repetition, setup included
}

func sizesFor(quick bool) sizes {
	s := sizes{
		exportBytes: 256 << 20,
		w1Jobs:      2000,
		w1Bytes:     16 << 10,
		w3Duration:  5 * time.Second,
		w3Jobs:      100,
		w4Samples:   200,
		m1Exports:   1000,
		m3Pending:   10000,
		concurrency: 16,
		sideTimeout: 5 * time.Minute,
	}
	if quick {
		// M1 and M3 keep their counts: they take a second or two, and their
		// limits are stated for those counts.
		s.quick = true
		s.exportBytes = 32 << 20
		s.w1Jobs = 200
		s.w3Duration = time.Second
		s.sideTimeout = 2 * time.Minute
	}
	return s
}

// bench is the state of one run: the Redis, the key prefixes, the data.
type bench struct {
	addr   string
	opts   options
	sizes  sizes
	admin  *redis.Client // INFO, SCAN, UNLINK: never used by a measured side
	prefix string        // every key of this run starts with it
	work   string        // keys of one side of one repetition, deleted after it
	setup  string        // keys a workload prepares for all its repetitions
	data   []byte        // deterministic bytes every export and raw write reads
	name   string        // CLIENT SETNAME of the sides' connections
}

// user starts and reads every export of the run.
var user = exporter.User{ID: "bench", Permissions: []string{exporter.DefaultPermission}}

func newBench(ctx context.Context, addr string, o options) (*bench, error) {
	b := &bench{addr: addr, opts: o, sizes: sizesFor(o.quick)}
	var tag [6]byte
	_, _ = rand.Read(tag[:])
	b.prefix = "exporter-bench-" + hex.EncodeToString(tag[:]) + ":"
	b.work = b.prefix + "w:"
	b.setup = b.prefix + "s:"
	b.name = "exporter-bench-" + hex.EncodeToString(tag[:])
	b.admin = redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 1, ClientName: b.name + "-admin"})
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.admin.Ping(pctx).Err(); err != nil {
		b.admin.Close()
		return nil, fmt.Errorf("redis at %s: %w", addr, err)
	}
	// One buffer of deterministic bytes serves every export (through a
	// bytes.Reader) and every raw write (as sub-slices), so neither side
	// generates data while it is timed.
	b.data = make([]byte, b.sizes.exportBytes)
	seed := [32]byte{'e', 'x', 'p', 'o', 'r', 't', 'e', 'r'}
	mrand.NewChaCha8(seed).Read(b.data)
	return b, nil
}

// close deletes every key of the run and closes the admin client.
func (b *bench) close(ctx context.Context) error {
	err := b.deleteKeys(ctx, b.prefix)
	return errors.Join(err, b.admin.Close())
}

// describe prints the machine, the software and the run's settings.
func (b *bench) describe(ctx context.Context, ownServer bool) error {
	info, err := b.info(ctx, "server", "memory")
	if err != nil {
		return err
	}
	fmt.Println("exporter benchmark: the exporter against raw go-redis, alternating A B A B")
	fmt.Printf("machine:  %s/%s, %s, %d CPUs (nproc), GOMAXPROCS %d\n",
		runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Printf("go:       %s, go-redis %s\n", runtime.Version(), redis.Version())
	where := "started by bench on " + b.addr + ` (--save "" --appendonly no)`
	if !ownServer {
		where = "at " + b.addr + " (-addr), keys under " + b.prefix
	}
	fmt.Printf("redis:    %s %s (%s), %s\n", "redis-server", info["redis_version"], info["mem_allocator"], where)
	fmt.Printf("sha256:   %.0f MB/s on one core (the exporter hashes every byte it stores and downloads)\n", sha256Rate())
	fmt.Printf("settings: -reps %d; MB = 1e6 bytes, KiB/MiB = 2^10/2^20 bytes\n", b.opts.reps)
	if b.sizes.quick {
		fmt.Printf("QUICK RUN (-quick): exports of %d MiB instead of 256, %d W1 jobs instead of 2000, W3 for %v instead of 5 s;\n"+
			"          a smoke run, not comparable with full runs\n", b.sizes.exportBytes>>20, b.sizes.w1Jobs, b.sizes.w3Duration)
	}
	return nil
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// sha256Rate measures SHA-256 over 64 MiB in MB/s.
func sha256Rate() float64 {
	buf := make([]byte, 1<<20)
	h := sha256.New()
	start := time.Now()
	for range 64 {
		h.Write(buf)
	}
	h.Sum(nil)
	return 64 * (1 << 20) / 1e6 / time.Since(start).Seconds()
}

// warmUp loads the exporter's scripts into Redis and opens the first
// connections, so the first measured repetition does not pay for them.
func (b *bench) warmUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := b.client(4)
	defer c.Close()
	x, err := b.exporter(c, b.work, exporter.Config{})
	if err != nil {
		return err
	}
	run := func() error {
		job, err := x.StartExport(ctx, user, bytes.NewReader(b.data[:100<<10]))
		if err != nil {
			return err
		}
		if _, err := waitCompleted(ctx, x, job.ID, 100<<10); err != nil {
			return err
		}
		if _, err := x.GetExportStatus(ctx, user, job.ID); err != nil {
			return err
		}
		d, err := x.OpenExport(ctx, user, job.ID)
		if err != nil {
			return err
		}
		defer d.Close()
		if _, err := io.Copy(io.Discard, d); err != nil {
			return err
		}
		blocked := newBlockSource()
		job, err = x.StartExport(ctx, user, blocked)
		if err != nil {
			return err
		}
		if err := blocked.waitStarted(ctx); err != nil {
			return err
		}
		if _, err := x.CancelExport(ctx, user, job.ID); err != nil {
			return err
		}
		return blocked.waitClosed(ctx)
	}
	err = run()
	err = errors.Join(err, shutdown(x, 10*time.Second))
	return errors.Join(err, b.clean(ctx))
}

// client returns a fresh client with room for pool concurrent commands
// and pipelines. Every side of every repetition gets its own.
func (b *bench) client(pool int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  b.addr,
		ContextTimeoutEnabled: true,
		PoolSize:              pool,
		PipelinePoolSize:      pool,
		ClientName:            b.name,
	})
}

func (b *bench) exporter(c redis.UniversalClient, prefix string, cfg exporter.Config) (*exporter.Exporter, error) {
	return exporter.New(exporter.NewRedisStore(c).WithPrefix(prefix), cfg)
}

// shutdown shuts x down, letting its exports run for grace, and fails if
// Shutdown has not returned a minute after that (a source that ignores
// Close would hold it). A Shutdown that had to fail exports is not an
// error here: the memory workloads end that way on purpose.
func shutdown(x *exporter.Exporter, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- x.Shutdown(ctx) }()
	select {
	case err := <-done:
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return err
	case <-time.After(grace + time.Minute):
		return fmt.Errorf("exporter Shutdown did not return %v after its deadline", time.Minute)
	}
}

// waitCompleted waits for job id to end and fails unless it completed with
// size bytes.
func waitCompleted(ctx context.Context, x *exporter.Exporter, id string, size int64) (*exporter.Job, error) {
	job, err := x.WaitExport(ctx, user, id)
	if err != nil {
		return nil, err
	}
	if job.Status != exporter.StatusCompleted {
		return nil, fmt.Errorf("export %s ended %s: %s", id, job.Status, job.Error)
	}
	if size >= 0 && job.Bytes != size {
		return nil, fmt.Errorf("export %s completed with %d bytes, want %d", id, job.Bytes, size)
	}
	return job, nil
}

// clean deletes the keys of the last side and waits until Redis has freed
// them, so that no repetition pays for the previous one's memory.
func (b *bench) clean(ctx context.Context) error {
	if err := b.deleteKeys(ctx, b.work); err != nil {
		return err
	}
	return b.waitLazyfree(ctx)
}

// deleteKeys removes every key under prefix with SCAN and UNLINK.
func (b *bench) deleteKeys(ctx context.Context, prefix string) error {
	var cursor uint64
	for {
		keys, next, err := b.admin.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return fmt.Errorf("SCAN %s*: %w", prefix, err)
		}
		if len(keys) > 0 {
			if err := b.admin.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("UNLINK: %w", err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// waitLazyfree waits until Redis's background thread has freed what
// UNLINK handed it.
func (b *bench) waitLazyfree(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := b.infoInt(ctx, "memory", "lazyfree_pending_objects")
		if err != nil || n == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis still has %d objects to free after 30s", n)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitClients waits until the server has closed every connection of the
// sides' clients (they carry the name b.name), so that no closing
// connection's buffers count in used_memory.
func (b *bench) waitClients(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := b.admin.ClientList(ctx).Result()
		if err != nil {
			return fmt.Errorf("CLIENT LIST: %w", err)
		}
		n := strings.Count(list, " name="+b.name+" ")
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections of ours still open 10s after closing their clients", n)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// findKey returns the key under prefix that holds job id and has type
// typ. It finds the exporter's keys by looking, not by rebuilding their
// layout, so a change of layout fails here loudly instead of measuring
// the wrong key.
func (b *bench) findKey(ctx context.Context, prefix, id, typ string) (string, error) {
	var cursor uint64
	var found []string
	for {
		keys, next, err := b.admin.Scan(ctx, cursor, prefix+"*"+id+"*", 1000).Result()
		if err != nil {
			return "", err
		}
		for _, k := range keys {
			t, err := b.admin.Type(ctx, k).Result()
			if err != nil {
				return "", err
			}
			if t == typ {
				found = append(found, k)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("want one %s key of job %s under %s, found %q", typ, id, prefix, found)
	}
	return found[0], nil
}

// info returns the fields of INFO sections.
func (b *bench) info(ctx context.Context, sections ...string) (map[string]string, error) {
	s, err := b.admin.Info(ctx, sections...).Result()
	if err != nil {
		return nil, fmt.Errorf("INFO %s: %w", strings.Join(sections, " "), err)
	}
	m := make(map[string]string)
	for line := range strings.SplitSeq(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

func (b *bench) infoInt(ctx context.Context, section, field string) (int64, error) {
	m, err := b.info(ctx, section)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(m[field], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO %s: %s is %q", section, field, m[field])
	}
	return n, nil
}

// snapshot is what a meter reads before and after a measured section.
type snapshot struct {
	at       time.Time
	redisCPU float64 // seconds, user+sys, all of the server's threads
	goCPU    float64 // seconds, user+sys, this process
	cmds     map[string]cmdStat
}

type cmdStat struct {
	calls int64
	usec  int64
}

func (b *bench) snapshot(ctx context.Context) (snapshot, error) {
	m, err := b.info(ctx, "cpu", "commandstats")
	if err != nil {
		return snapshot{}, err
	}
	s := snapshot{cmds: make(map[string]cmdStat)}
	for k, v := range m {
		switch {
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			s.redisCPU += f
		case strings.HasPrefix(k, "cmdstat_"):
			var c cmdStat
			for field := range strings.SplitSeq(v, ",") {
				name, val, _ := strings.Cut(field, "=")
				switch name {
				case "calls":
					c.calls, _ = strconv.ParseInt(val, 10, 64)
				case "usec":
					c.usec, _ = strconv.ParseInt(val, 10, 64)
				}
			}
			s.cmds[strings.TrimPrefix(k, "cmdstat_")] = c
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.goCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	s.at = time.Now()
	return s, nil
}

// meter times the measured section of one side of one repetition and
// records the CPU that Redis and this process spent in it, and the
// commands Redis ran.
type meter struct {
	b          *bench
	start, end snapshot
	started    bool
}

// begin starts the clock; the snapshot's round trip comes before it.
func (m *meter) begin(ctx context.Context) error {
	s, err := m.b.snapshot(ctx)
	m.start, m.started = s, err == nil
	m.start.at = time.Now()
	return err
}

// stop stops the clock and returns the elapsed time.
func (m *meter) stop(ctx context.Context) (time.Duration, error) {
	now := time.Now()
	s, err := m.b.snapshot(ctx)
	s.at = now
	m.end = s
	return now.Sub(m.start.at), err
}

func (m *meter) elapsed() time.Duration { return m.end.at.Sub(m.start.at) }

// cpu returns Redis's and this process's CPU in the section, in percent
// of one core.
func (m *meter) cpu() (redisPct, goPct float64) {
	d := m.elapsed().Seconds()
	if !m.started || d <= 0 {
		return 0, 0
	}
	return 100 * (m.end.redisCPU - m.start.redisCPU) / d, 100 * (m.end.goCPU - m.start.goCPU) / d
}

// commands lists the commands Redis ran in the section, most calls first.
func (m *meter) commands() string {
	type delta struct {
		name        string
		calls, usec int64
	}
	var ds []delta
	for name, c := range m.end.cmds {
		p := m.start.cmds[name]
		if name == "info" || c.calls == p.calls {
			continue
		}
		ds = append(ds, delta{name, c.calls - p.calls, c.usec - p.usec})
	}
	slices.SortFunc(ds, func(a, b delta) int { return int(b.calls - a.calls) })
	var sb strings.Builder
	for i, d := range ds {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s %d (%.1f us/call, %.0f ms)", d.name, d.calls, float64(d.usec)/float64(d.calls), float64(d.usec)/1000)
	}
	return sb.String()
}

// parallel runs f(ctx, i) for i in [0, n) on n goroutines and returns the
// first error; the others see ctx cancelled then.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		wg.Go(func() {
			if err := f(ctx, i); err != nil {
				once.Do(func() { first = err; cancel(err) })
			}
		})
	}
	wg.Wait()
	return first
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
