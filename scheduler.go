package exporter

import (
	"fmt"
	"slices"
	"sync"
)

// scheduler holds the runs of one Exporter, pending and running. It alone
// keeps the counts that bound them (MaxRunning, MaxPending, MaxPerUser),
// the queue of pending runs, and the workers that execute them.
//
// A start is admitted first (capacity is claimed before its job is
// recorded), then held once its job is; a start that fails in between is
// withdrawn. A durable export's attempt takes a run slot instead
// (reserveSlots) before its claim, and is held in it (holdAttempt) or gives
// it back (unreserveSlot); the queue, not this scheduler, caps its owner. A held run leaves by drop: its worker drops it when done, and
// abort drops a pending one at once. Shutdown closes the scheduler (no
// admissions), drains what it gives up on, and stops it (no goroutines).
type scheduler struct {
	maxRunning, maxPending, maxPerUser int

	wg      *sync.WaitGroup // the Exporter's: Shutdown waits for every goroutine
	execute func(*run)      // runs one export to its end
	ins     *instruments    // counts starts and ends
	freed   func()          // called (under mu, must not block) when a run slot comes free; may be nil

	mu       sync.Mutex
	closed   bool            // Shutdown was called: no admissions
	stopped  bool            // Shutdown waits for the goroutines: none may start
	admitted int             // starts between admit and hold
	running  int             // worker goroutines
	queue    []*run          // pending runs, oldest first
	runs     map[string]*run // pending and running, by id
	perUser  map[string]int  // admitted and held, by owner
	idle     chan struct{}   // closed once closed and nothing is held
}

// newScheduler returns a scheduler for cfg's limits; its ins is set
// before its first hold.
func newScheduler(cfg Config, wg *sync.WaitGroup, execute func(*run)) *scheduler {
	return &scheduler{
		maxRunning: cfg.MaxRunning,
		maxPending: cfg.MaxPending,
		maxPerUser: cfg.MaxPerUser,
		wg:         wg,
		execute:    execute,
		runs:       make(map[string]*run),
		perUser:    make(map[string]int),
		idle:       make(chan struct{}),
	}
}

// admit claims capacity for one start of owner. Errors wrap ErrClosed or
// ErrBusy.
func (s *scheduler) admit(owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if len(s.runs)+s.admitted >= s.maxRunning+s.maxPending {
		return fmt.Errorf("%w: %d exports pending", ErrBusy, len(s.queue))
	}
	if s.maxPerUser > 0 && s.perUser[owner] >= s.maxPerUser {
		return fmt.Errorf("%w: user %q has %d exports under way", ErrBusy, owner, s.perUser[owner])
	}
	s.admitted++
	s.perUser[owner]++
	return nil
}

// withdraw gives back the capacity of an admitted start whose job was not
// recorded.
func (s *scheduler) withdraw(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admitted--
	s.uncount(owner)
}

// hold turns an admitted start into a held run, and starts a worker for it
// if a run slot is free; else it waits in the queue. Once Shutdown stopped
// waiting for goroutines, the start is withdrawn instead and hold returns
// ErrClosed: the caller records the job's end.
func (s *scheduler) hold(rn *run) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admitted--
	if s.stopped {
		s.uncount(rn.job.Owner)
		return ErrClosed
	}
	s.runs[rn.job.ID] = rn
	s.ins.recordBegin(rn.ctx) // before its end can be counted
	if s.running < s.maxRunning {
		s.running++
		s.wg.Add(1)
		go s.worker(rn)
		return nil
	}
	s.queue = append(s.queue, rn)
	return nil
}

// reserveSlots takes the free run slots for durable exports' claims,
// unless a run of this Exporter waits for one (they came first), and
// returns how many it took.
func (s *scheduler) reserveSlots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.queue) > 0 || s.running >= s.maxRunning {
		return 0
	}
	n := s.maxRunning - s.running
	s.running = s.maxRunning
	return n
}

// unreserveSlot gives back a slot that reserveSlots took: to the oldest
// pending run, if one came meanwhile.
func (s *scheduler) unreserveSlot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 && !s.stopped {
		rn := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.wg.Add(1)
		go s.worker(rn)
		return
	}
	s.running--
	s.checkIdle()
}

// holdAttempt holds a durable export's attempt in a slot reserveSlots
// took, and starts its worker. Once Shutdown was called it returns
// ErrClosed instead: the caller hands the attempt back and gives the slot
// back.
func (s *scheduler) holdAttempt(rn *run) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.runs[rn.job.ID] = rn
	s.ins.recordBegin(rn.ctx)
	s.wg.Add(1)
	go s.worker(rn)
	return nil
}

// worker executes rn, then the next pending run, until none is left.
func (s *scheduler) worker(rn *run) {
	defer s.wg.Done()
	for rn != nil {
		s.execute(rn)
		rn = s.next(rn)
	}
}

// next drops done and returns the oldest pending run, or nil, in which
// case the worker ends.
func (s *scheduler) next(done *run) *run {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(done)
	if len(s.queue) == 0 {
		s.running--
		if s.freed != nil {
			s.freed()
		}
		return nil
	}
	rn := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return rn
}

// drop removes rn from the held runs and counts its end, once.
func (s *scheduler) drop(rn *run) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(rn)
}

func (s *scheduler) dropLocked(rn *run) {
	if s.runs[rn.job.ID] != rn {
		return
	}
	delete(s.runs, rn.job.ID)
	if rn.attempt == nil {
		s.uncount(rn.job.Owner)
	} else {
		s.checkIdle()
	}
	s.ins.recordEnd(rn.ctx, rn.outcome(), rn.failCode(), rn.start)
}

// uncount drops one of owner's starts from the count. s.mu is held.
func (s *scheduler) uncount(owner string) {
	if s.perUser[owner]--; s.perUser[owner] <= 0 {
		delete(s.perUser, owner)
	}
	s.checkIdle()
}

// abort stops the run of id, if it is held, for cause. A pending run is
// dropped from the queue at once and its source closed; a running one is
// stopped by its context, and its worker drops it.
func (s *scheduler) abort(id string, cause error) {
	s.mu.Lock()
	rn := s.runs[id]
	if rn == nil {
		s.mu.Unlock()
		return
	}
	rn.cancel(cause) // before the drop, which counts the end by its cause
	queued := false
	if i := slices.Index(s.queue, rn); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		s.dropLocked(rn)
		queued = true
	}
	s.mu.Unlock()
	if queued {
		rn.closeReader()
	}
}

// held returns the runs held now.
func (s *scheduler) held() []*run {
	s.mu.Lock()
	defer s.mu.Unlock()
	runs := make([]*run, 0, len(s.runs))
	for _, rn := range s.runs {
		runs = append(runs, rn)
	}
	return runs
}

// counts returns how many runs are pending and how many are held.
func (s *scheduler) counts() (pending, held int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), len(s.runs)
}

// spawn starts f as a goroutine the Exporter waits for, unless Shutdown
// stopped waiting; it reports whether it did.
func (s *scheduler) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// close refuses admissions from now on and returns the channel closed once
// nothing is held. It reports whether this was the first call.
func (s *scheduler) close() (idle <-chan struct{}, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first = !s.closed
	s.closed = true
	s.checkIdle()
	return s.idle, first
}

// checkIdle closes s.idle once closed and nothing is left. s.mu is held.
func (s *scheduler) checkIdle() {
	if s.closed && len(s.runs) == 0 && s.admitted == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
}

// drain empties the queue and returns its runs, which no worker will
// take (the caller drops them), and the runs being executed.
func (s *scheduler) drain() (pending, running []*run) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pending = s.queue
	s.queue = nil
	queued := make(map[*run]bool, len(pending))
	for _, rn := range pending {
		queued[rn] = true
	}
	for _, rn := range s.runs {
		if !queued[rn] {
			running = append(running, rn)
		}
	}
	return pending, running
}

// stop lets no goroutine start from now on (spawn and hold refuse).
func (s *scheduler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
}

// isClosed reports whether close was called.
func (s *scheduler) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// isStopped reports whether stop was called.
func (s *scheduler) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// left is how many runs are still held.
func (s *scheduler) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runs)
}
