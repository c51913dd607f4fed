package replica

// Internals for the rebuild's benchmark, whose baselines use what the rebuild uses.

// NewerVersionWins is the version gate that ends every insert of user rows.
const NewerVersionWins = newerVersionWins

// ReadAhead is how many messages a read of the stream keeps in flight.
const ReadAhead = readAhead

// SetMaxHeld makes rebuilds write to their copy every n users held, until restore is called. Only
// a test that does not run in parallel may call it.
func SetMaxHeld(n int) (restore func()) {
	before := maxHeld
	maxHeld = n
	return func() { maxHeld = before }
}
