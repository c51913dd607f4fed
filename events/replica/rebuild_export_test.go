package replica

// Internals for the rebuild's benchmark, whose baselines use what the rebuild uses.

// NewerVersionWins is the version gate that ends every insert of user rows.
const NewerVersionWins = newerVersionWins

// ReadAhead is how many messages a read of the stream keeps in flight.
const ReadAhead = readAhead
