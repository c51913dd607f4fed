package auth

import "time"

// SetResync sets how often Watch reads the key directly, for tests.
func SetResync(k *KeySet, d time.Duration) { k.resync = d }
