package exporter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Instances: each running Exporter whose store keeps instance reports
// (InstanceBoard; RedisStore does) reports what it does every
// instanceEvery, so that an operator sees every instance of a service in
// one place (Exporter.Instances, exporterhttp's dashboard): what runs and
// waits where, how fast bytes are stored, and why exports failed.

// Instance is one running Exporter's report of itself. Its counts cover
// the runs it held since it started: exports it accepted (StartExport)
// and attempts of durable exports it claimed.
type Instance struct {
	ID      string    `json:"id"`              // unique per Exporter: host, process and a random part
	Host    string    `json:"host"`            // os.Hostname
	PID     int       `json:"pid"`             // os.Getpid
	Kinds   []string  `json:"kinds,omitempty"` // the durable kinds it runs (Config.Sources)
	Started time.Time `json:"started"`         // when the Exporter was created
	Seen    time.Time `json:"seen"`            // when it sent this report

	Running    int `json:"running"`     // exports it is copying
	Pending    int `json:"pending"`     // exports it accepted that wait for a run slot
	MaxRunning int `json:"max_running"` // Config.MaxRunning

	Began     int64 `json:"began"`     // runs begun
	Completed int64 `json:"completed"` // runs that completed the export
	Failed    int64 `json:"failed"`    // runs that failed (an attempt retried or handed back counts too)
	Cancelled int64 `json:"cancelled"` // runs ended by a cancel
	// Failures counts the failed runs by Job.ErrorCode (CodeSource,
	// CodeWorkerLost, ...).
	Failures map[string]int64 `json:"failures,omitempty"`

	BytesStored int64 `json:"bytes_stored"` // export bytes it stored
	// Throughput is the bytes it stored per second since its previous
	// report.
	Throughput int64 `json:"throughput"`
}

// InstanceBoard is the optional ability of a Store to keep the reports
// of the running Exporters (Exporter.Instances). RedisStore implements it.
type InstanceBoard interface {
	// ReportInstance records in, replacing the previous report of in.ID.
	// A report not replaced within ttl, by the store's clock (instances'
	// clocks may disagree), is dropped.
	ReportInstance(ctx context.Context, in *Instance, ttl time.Duration) error
	// RemoveInstance drops the report of instance id (its Shutdown).
	RemoveInstance(ctx context.Context, id string) error
	// Instances returns the reports not older than their ttl.
	Instances(ctx context.Context) ([]*Instance, error)
}

// How often an Exporter reports, and how long a report lasts: an instance
// that missed three reports (killed, cut off) is dropped.
const (
	instanceEvery = 2 * time.Second
	instanceTTL   = 3*instanceEvery + time.Second
)

// tally counts the ends of the runs an Exporter held, for its report.
type tally struct {
	began, completed, failed, cancelled, stored atomic.Int64

	mu       sync.Mutex
	failures map[string]int64
}

func (t *tally) end(s Status, code string) {
	switch s {
	case StatusCompleted:
		t.completed.Add(1)
	case StatusCancelled:
		t.cancelled.Add(1)
	default:
		t.failed.Add(1)
		if code == "" {
			code = CodeStore
		}
		t.mu.Lock()
		if t.failures == nil {
			t.failures = map[string]int64{}
		}
		t.failures[code]++
		t.mu.Unlock()
	}
}

// newInstanceID is an id unique to this Exporter, readable by an operator.
func newInstanceID() (id, host string) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	if len(host) > 64 {
		host = host[:64]
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newToken()[:8]), host
}

// report is the Exporter's report now; prev is its previous one (nil at
// first), for the throughput.
func (e *Exporter) report(prev *Instance) *Instance {
	pending, held := e.sched.counts()
	t := &e.ins.tally
	in := &Instance{
		ID: e.instanceID, Host: e.host, PID: os.Getpid(), Kinds: e.kinds(), Started: e.started, Seen: time.Now(),
		Running: max(held-pending, 0), Pending: pending, MaxRunning: e.cfg.MaxRunning, // held counts the pending too
		Began: t.began.Load(), Completed: t.completed.Load(), Failed: t.failed.Load(), Cancelled: t.cancelled.Load(),
		BytesStored: t.stored.Load(),
	}
	t.mu.Lock()
	if len(t.failures) > 0 {
		in.Failures = maps.Clone(t.failures)
	}
	t.mu.Unlock()
	if prev != nil {
		if d := in.Seen.Sub(prev.Seen); d > 0 {
			in.Throughput = int64(float64(in.BytesStored-prev.BytesStored) / d.Seconds())
		}
	}
	return in
}

// reportInstance reports this Exporter to the store's InstanceBoard every
// instanceEvery until the Exporter stops, then removes its report. It is
// one of the background goroutines of an Exporter whose store keeps
// reports.
func (e *Exporter) reportInstance() {
	board := e.store.(InstanceBoard)
	t := time.NewTimer(0)
	defer t.Stop()
	var prev *Instance
	for {
		select {
		case <-e.base.Done():
			ctx, cancel := context.WithTimeout(context.WithoutCancel(e.base), time.Second)
			defer cancel()
			if err := board.RemoveInstance(ctx, e.instanceID); err != nil {
				e.log.Debug("removing the instance report failed", "err", err)
			}
			return
		case <-t.C:
		}
		in := e.report(prev)
		ctx, cancel := context.WithTimeout(e.base, instanceEvery)
		err := board.ReportInstance(ctx, in, instanceTTL)
		cancel()
		if err != nil && e.base.Err() == nil {
			e.log.Debug("reporting the instance failed", "err", err)
		}
		prev = in
		t.Reset(instanceEvery)
	}
}

// Instances returns the reports of every running Exporter that shares
// this one's store, this one's included once it has reported, sorted by
// ID: what each runs and holds pending, its counts of runs by how they
// ended, failures by code, and throughput. An Exporter reports every two
// seconds from its first export (from New with Config.Sources); one that
// stopped reporting (killed, cut off) is dropped within seven seconds,
// and Shutdown removes its own. It needs Config.AdminPermission (errors
// wrap ErrUnauthenticated, ErrForbidden) and a Store that implements
// InstanceBoard (else the error wraps errors.ErrUnsupported).
func (e *Exporter) Instances(ctx context.Context, user User) ([]*Instance, error) {
	list, err := e.instances(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("exporter: instances: %w", err)
	}
	return list, nil
}

func (e *Exporter) instances(ctx context.Context, user User) ([]*Instance, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if err := e.requireAdmin(ctx, user); err != nil {
		return nil, err
	}
	board, ok := e.store.(InstanceBoard)
	if !ok {
		return nil, fmt.Errorf("%w: the store keeps no instance reports (it is no InstanceBoard)", errors.ErrUnsupported)
	}
	list, err := board.Instances(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(list, func(a, b *Instance) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if list == nil {
		list = []*Instance{}
	}
	return list, nil
}
