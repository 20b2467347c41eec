package health

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPoolGrowsForSlowJobsAndShrinksWhenIdle(t *testing.T) {
	release := make(chan struct{})
	var running, peak, ran atomic.Int64
	p := newPool(64, func(j job) {
		n := running.Add(1)
		for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
		}
		if j.timeout > 0 { // "slow" jobs block until released
			<-release
		}
		running.Add(-1)
		ran.Add(1)
	})
	p.idleAfter = 50 * time.Millisecond
	defer p.stop()

	// Jobs that finish at once are served by a few workers, however many
	// are submitted back to back.
	for i := 0; i < 500; i++ {
		p.submit(job{})
	}
	waitFor(t, "the quick jobs", func() bool { return ran.Load() == 500 })
	if w := p.workers(); w > 16 {
		t.Errorf("%d workers for quick jobs, want a few", w)
	}
	// Jobs that hang get a worker each, up to max (the Checker never has
	// more than max jobs queued or running).
	for i := 0; i < 64; i++ {
		p.submit(job{timeout: 1})
	}
	waitFor(t, "64 hanging jobs", func() bool { return running.Load() == 64 })
	if w := p.workers(); w != 64 {
		t.Errorf("%d workers, want max (64)", w)
	}
	close(release)
	waitFor(t, "all jobs", func() bool { return ran.Load() == 564 })
	if peak.Load() > 64 {
		t.Errorf("peak concurrency %d over max", peak.Load())
	}
	// Idle workers leave.
	waitFor(t, "idle workers to exit", func() bool { return p.workers() == 0 })
}

// TestPoolGrowsWhenItsTimerIsLate: the growth timer firing late (the
// process is busy) must not stop the pool from growing while jobs wait: the
// workers may be blocked on the network, not short of CPU. A timer that
// fired 10 spawn delays late adds the 10 workers it owes, but never more
// than there are jobs waiting.
func TestPoolGrowsWhenItsTimerIsLate(t *testing.T) {
	release := make(chan struct{})
	p := newPool(64, func(j job) { <-release })
	defer p.stop()
	defer close(release)
	p.submit(job{}) // the first worker starts at once and blocks
	waitFor(t, "the first worker", func() bool { return p.workers() == 1 })

	grow := func(waiting int, late time.Duration) {
		p.mu.Lock()
		// Drive growIfStuck by hand: the real timer now fires a no-op.
		p.grow.Stop()
		p.grow = time.AfterFunc(time.Hour, func() {})
		for i := 0; i < waiting; i++ {
			p.queue = append(p.queue, job{})
		}
		p.armed, p.armAt = true, time.Now().Add(-late)
		p.mu.Unlock()
		p.growIfStuck()
	}
	grow(3, 10*spawnDelay) // 10 owed, 3 waiting
	if n := p.workers(); n != 1+3 {
		t.Errorf("a late timer with 3 jobs waiting left %d workers, want 4", n)
	}
	waitFor(t, "the new workers to take their jobs", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.pending() == 0 })
	grow(20, 10*spawnDelay) // 10 owed, 20 waiting
	if n := p.workers(); n != 4+10 {
		t.Errorf("a timer 10 spawn delays late left %d workers, want 14", n)
	}
	p.mu.Lock()
	rearmed := p.armed
	p.mu.Unlock()
	if !rearmed {
		t.Error("jobs still wait, but the timer was not re-armed")
	}
	grow(0, 20*spawnDelay) // 20 owed, 10 waiting
	if n := p.workers(); n != 4+20 {
		t.Errorf("%d workers, want one per job (24)", n)
	}
}
