package auth

import "time"

// SetResync sets how often w reads the key directly besides watching it, for tests.
func SetResync(w *KeyWatch, d time.Duration) { w.resync = d }
