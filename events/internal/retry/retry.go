// Package retry paces the retries of the background loops: growing delays with jitter, and a
// sleep that a context can cut short.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields growing delays, doubling from Min to Max, with jitter. The zero value is not
// usable: set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay: a random duration between half and all of the current step.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Reset starts the delays again from Min.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx is done; it reports whether the whole wait happened.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
