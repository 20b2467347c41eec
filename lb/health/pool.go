package health

import (
	"slices"
	"sync"
	"time"
)

const (
	// spawnDelay is how long due checks may wait for a busy worker to free
	// up before the pool starts another worker, and the pool then grows by
	// at most one worker per spawnDelay that checks have been waiting.
	// Checks that finish quickly (a loopback or LAN handshake) are served
	// by a handful of workers even when many fall due at once; checks that
	// hang until their timeout get a worker each within about a
	// millisecond per hanging check.
	//
	// The pool grows whenever checks wait and fewer than max workers
	// exist, even when its timer fires late because the process is busy:
	// a late timer does not tell a CPU shortage from workers blocked on
	// the network, and when they are blocked, waiting for them starves
	// every other target until their timeout. A late timer adds the
	// workers it owes for the time it missed, never more than there are
	// checks waiting for one.
	spawnDelay = time.Millisecond
	// workerIdle is how long a worker waits without work before it exits,
	// so that the pool shrinks back after a burst of slow checks.
	workerIdle = 5 * time.Second
	// fanout is how many idle workers a worker wakes when it takes a check
	// and more are queued.
	fanout = 2
)

// pool runs jobs on worker goroutines. It starts with none, grows up to max
// while jobs wait, and shrinks as workers stay idle.
//
// Jobs go into a queue. submit wakes at most one idle worker; a worker that
// takes a job wakes up to fanout more while jobs remain. Waking is thus
// spread over the workers, and over the Ps they run on, instead of every
// worker being readied by the scheduler's goroutine onto the scheduler's P,
// where they queue behind each other when the host preempts that thread.
// Idle workers are reused last-in first-out, so that the surplus after a
// burst really is idle and exits, and the busy few keep warm stacks.
//
// The caller bounds the number of queued and running jobs to max, so
// submit never blocks.
type pool struct {
	max       int
	run       func(job)
	idleAfter time.Duration // workerIdle, but for tests

	mu     sync.Mutex
	queue  []job // queue[head:] are waiting; reset to empty when drained
	head   int
	idle   []*worker // a stack: the most recently freed last
	waking int       // workers woken that have not yet looked at the queue
	n      int       // workers alive
	grow   *time.Timer
	armed  bool      // grow is pending
	armAt  time.Time // when it was armed
	closed bool
	wg     sync.WaitGroup
}

type worker struct {
	wake chan struct{} // capacity 1
}

func newPool(max int, run func(job)) *pool {
	p := &pool{max: max, run: run, idleAfter: workerIdle}
	p.grow = time.AfterFunc(time.Hour, p.growIfStuck)
	p.grow.Stop()
	return p
}

// submit queues j and makes sure a worker will take it.
func (p *pool) submit(j job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head > 32 && p.head > len(p.queue)/2 {
		// Never drained for a while: reclaim the taken prefix.
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	p.queue = append(p.queue, j)
	switch {
	case p.waking > 0:
		// A woken worker will take it, and wake others if needed.
	case len(p.idle) > 0:
		p.wakeLocked()
	case p.n == 0:
		p.spawnLocked()
	default:
		p.armLocked()
	}
}

// wakeLocked wakes the most recently idle worker.
func (p *pool) wakeLocked() {
	k := len(p.idle) - 1
	w := p.idle[k]
	p.idle[k] = nil
	p.idle = p.idle[:k]
	p.waking++
	w.wake <- struct{}{}
}

func (p *pool) spawnLocked() {
	p.n++
	p.waking++
	p.wg.Add(1)
	go p.work(&worker{wake: make(chan struct{}, 1)})
}

// armLocked schedules growIfStuck, so that jobs every worker is too busy
// to take get a new worker after spawnDelay.
func (p *pool) armLocked() {
	if !p.armed && !p.closed {
		p.armed, p.armAt = true, time.Now()
		p.grow.Reset(spawnDelay)
	}
}

func (p *pool) growIfStuck() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.closed {
		return
	}
	// A worker per spawnDelay that jobs have waited since the timer was
	// armed, so that a timer firing late (a busy CPU) does not slow the
	// growth down; but only for jobs no woken or new worker will take.
	owed := max(1, int(time.Since(p.armAt)/spawnDelay))
	for ; owed > 0 && p.pending() > p.waking; owed-- {
		switch {
		case len(p.idle) > 0:
			p.wakeLocked()
		case p.n < p.max:
			p.spawnLocked()
		default:
			return // every worker is busy; each takes the next job when done
		}
	}
	if p.pending() > p.waking {
		p.armLocked()
	}
}

func (p *pool) pending() int { return len(p.queue) - p.head }

func (p *pool) work(w *worker) {
	defer p.wg.Done()
	idle := time.NewTimer(p.idleAfter)
	defer idle.Stop()
	p.mu.Lock()
	p.waking-- // spawned, as if woken
	for {
		if p.pending() > 0 {
			j := p.queue[p.head]
			p.queue[p.head] = job{}
			if p.head++; p.head == len(p.queue) {
				p.queue, p.head = p.queue[:0], 0
			}
			for i := 0; i < fanout && p.pending() > p.waking && len(p.idle) > 0; i++ {
				p.wakeLocked()
			}
			if p.pending() > p.waking {
				p.armLocked()
			}
			p.mu.Unlock()
			p.run(j)
			p.mu.Lock()
			continue
		}
		if p.closed {
			p.n--
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		idle.Reset(p.idleAfter)
		select {
		case <-w.wake:
			p.mu.Lock()
			p.waking--
			continue
		case <-idle.C:
		}
		p.mu.Lock()
		if i := slices.Index(p.idle, w); i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
			p.n--
			p.mu.Unlock()
			return
		}
		// Woken while timing out: a wake is in w.wake.
		p.mu.Unlock()
		<-w.wake
		p.mu.Lock()
		p.waking--
	}
}

// stop lets every worker finish the queued jobs and exit, and waits for
// them. submit must not be called any more.
func (p *pool) stop() {
	p.mu.Lock()
	p.closed = true
	p.grow.Stop()
	for len(p.idle) > 0 {
		p.wakeLocked()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pool) workers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
