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

// TestPoolDoesNotGrowWhenStarvedOfCPU: when the growth timer itself fires
// late, the process lacks CPU, not workers, and the pool waits instead of
// adding a goroutine that would only queue for CPU too.
func TestPoolDoesNotGrowWhenStarvedOfCPU(t *testing.T) {
	release := make(chan struct{})
	p := newPool(8, func(j job) { <-release })
	defer p.stop()
	defer close(release)
	p.submit(job{}) // the first worker starts at once and blocks
	waitFor(t, "the first worker", func() bool { return p.workers() == 1 })

	p.mu.Lock()
	// Drive growIfStuck by hand: the real timer now fires a no-op.
	p.grow.Stop()
	p.grow = time.AfterFunc(time.Hour, func() {})
	p.queue = append(p.queue, job{})
	p.armed, p.armAt = true, time.Now().Add(-10*spawnDelay) // fired 10x late
	p.mu.Unlock()
	p.growIfStuck()
	if n := p.workers(); n != 1 {
		t.Errorf("a late timer grew the pool to %d workers", n)
	}
	p.mu.Lock()
	rearmed := p.armed
	p.armAt = time.Now().Add(-spawnDelay) // on time
	p.mu.Unlock()
	if !rearmed {
		t.Error("the late timer was not re-armed")
	}
	p.growIfStuck()
	if n := p.workers(); n != 2 {
		t.Errorf("a timely timer left %d workers, want 2", n)
	}
}
