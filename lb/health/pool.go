package health

import (
	"slices"
	"sync"
	"time"
)

const (
	// spawnDelay is how long a due check waits for a busy worker to free
	// up before the pool starts another worker for it. Checks that finish
	// quickly (a loopback or LAN handshake) are then served by a handful
	// of workers even when many fall due at once; checks that hang until
	// their timeout make the pool grow within a few milliseconds.
	spawnDelay = time.Millisecond
	// workerIdle is how long a worker waits without work before it exits,
	// so that the pool shrinks back after a burst of slow checks.
	workerIdle = 5 * time.Second
)

// pool runs jobs on worker goroutines. It starts with none, grows up to max
// when jobs find no idle worker, and shrinks as workers stay idle. Idle
// workers are reused last-in first-out, so that the surplus after a burst
// really is idle and exits, and the busy few keep warm stacks.
//
// submit is called by one goroutine (the scheduler).
type pool struct {
	max       int
	run       func(job)
	idleAfter time.Duration // workerIdle, but for tests

	mu    sync.Mutex
	idle  []*worker // a stack: the most recently freed last
	n     int       // workers alive
	freed chan struct{}
	quit  chan struct{}
	wg    sync.WaitGroup
	timer *time.Timer // submit's, for spawnDelay
}

type worker struct {
	jobs chan job // capacity 1: a handover never blocks
}

func newPool(max int, run func(job)) *pool {
	return &pool{max: max, run: run, idleAfter: workerIdle, freed: make(chan struct{}, 1), quit: make(chan struct{})}
}

// submit hands j to an idle worker, waiting for one at most spawnDelay
// before starting a new one while fewer than max run.
func (p *pool) submit(j job) {
	waited := false
	for {
		p.mu.Lock()
		if k := len(p.idle); k > 0 {
			w := p.idle[k-1]
			p.idle[k-1] = nil
			p.idle = p.idle[:k-1]
			p.mu.Unlock()
			w.jobs <- j
			return
		}
		if p.n == 0 || waited && p.n < p.max {
			p.n++
			p.mu.Unlock()
			p.wg.Add(1)
			go p.work(&worker{jobs: make(chan job, 1)}, j)
			return
		}
		p.mu.Unlock()
		if p.timer == nil {
			p.timer = time.NewTimer(spawnDelay)
		} else {
			p.timer.Reset(spawnDelay)
		}
		select {
		case <-p.freed:
			p.timer.Stop()
		case <-p.timer.C:
			waited = true
		}
	}
}

func (p *pool) work(w *worker, j job) {
	defer p.wg.Done()
	idle := time.NewTimer(p.idleAfter)
	defer idle.Stop()
	for {
		p.run(j)
		p.mu.Lock()
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		select {
		case p.freed <- struct{}{}:
		default:
		}
		idle.Reset(p.idleAfter)
		select {
		case j = <-w.jobs:
			continue
		case <-idle.C:
		case <-p.quit:
		}
		p.mu.Lock()
		if i := slices.Index(p.idle, w); i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
			p.n--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		// submit took us off the stack and is handing a job over.
		j = <-w.jobs
	}
}

// stop makes every worker exit once its current job is done and waits for
// them. submit must not be called any more.
func (p *pool) stop() {
	close(p.quit)
	p.wg.Wait()
	if p.timer != nil {
		p.timer.Stop()
	}
}

func (p *pool) workers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
