package replica

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff yields growing delays, doubling from min to max, with jitter. The zero value is not
// usable: set min and max.
type backoff struct {
	min, max, cur time.Duration
}

// next returns the next delay: a random duration between half and all of the current step.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// reset starts the delays again from min.
func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx is done; it reports whether the whole wait happened.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
