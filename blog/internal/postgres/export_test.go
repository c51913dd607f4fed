package postgres

// SetPageBytes sets the page budget of List for a test, so that a budget can be tested with small
// posts; New sets PageBytes.
func (s *Store) SetPageBytes(n int64) { s.pageBytes = n }
