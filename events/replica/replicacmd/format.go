package replicacmd

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authmesh/events"
	"github.com/authmesh/events/replica"
)

// writeStatus writes rep as a table of two columns; durable is the consumer looked for.
func writeStatus(w io.Writer, rep replica.StatusReport, durable string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "stream last sequence\t%d\n", rep.StreamLastSeq)
	fmt.Fprintf(tw, "last applied sequence\t%d\n", rep.AppliedSeq)
	fmt.Fprintf(tw, "lag\t%d\n", rep.Lag)
	fmt.Fprintf(tw, "users\t%d\n", rep.Users)
	fmt.Fprintf(tw, "dead letters\t%d\n", rep.DeadLetters)
	if rep.Consumer != nil {
		fmt.Fprintf(tw, "consumer %s\t%d pending, %d awaiting ack, %d redelivered\n",
			rep.Consumer.Name, rep.Consumer.NumPending, rep.Consumer.NumAckPending, rep.Consumer.NumRedeliver)
	} else {
		fmt.Fprintf(tw, "consumer %s\tnot found\n", durable)
	}
	return tw.Flush()
}

// writeRebuild writes what a rebuild with opts did, and which way it read the stream, for the
// service name.
func writeRebuild(w io.Writer, opts replica.RebuildOptions, res replica.RebuildResult, name string) {
	kind, read := "full", fmt.Sprintf("every message of the stream up to sequence %d (the whole history)", res.LastSeq)
	switch {
	case res.LastPerSubject:
		kind = "full, last message per subject"
		read = fmt.Sprintf("only the last message of each subject up to sequence %d (--last-per-subject), not the history", res.LastSeq)
	case opts.FromSeq > 0:
		kind = fmt.Sprintf("from sequence %d", opts.FromSeq)
		read = fmt.Sprintf("every message from sequence %d up to %d", opts.FromSeq, res.LastSeq)
	case !opts.Since.IsZero():
		kind = "since " + opts.Since.Format(time.RFC3339)
		read = fmt.Sprintf("every message stored since %s, up to sequence %d", opts.Since.Format(time.RFC3339), res.LastSeq)
	}
	fmt.Fprintf(w, "rebuilt the replica (%s) up to stream sequence %d and swapped it in\n", kind, res.LastSeq)
	fmt.Fprintf(w, "read %s\n", read)
	fmt.Fprintf(w, "events read %d, applied %d, skipped %d (%d invalid)\n", res.Read, res.Applied, res.Skipped, res.Invalid)
	fmt.Fprintf(w, "rows applied by %s during the rebuild and merged: %d\n", name, res.Merged)
	fmt.Fprintf(w, "took %s: %.0f events/s\n", res.Elapsed.Round(time.Millisecond), rate(res.Read, res.Elapsed))
}

// writeVerify writes one line per difference, then the verdict.
func writeVerify(w io.Writer, res replica.VerifyResult) {
	for _, d := range res.Differences {
		fmt.Fprintln(w, describe(d))
	}
	unchecked := ""
	if res.Unchecked > 0 {
		unchecked = fmt.Sprintf("; %d users not checked (changed after sequence %d, or not applied yet: check the lag and run verify again)", res.Unchecked, res.LastSeq)
	}
	if len(res.Differences) > 0 {
		fmt.Fprintf(w, "%d users differ between the replica and the stream (%d users in the stream up to sequence %d%s)\n",
			len(res.Differences), res.Users, res.LastSeq, unchecked)
		return
	}
	fmt.Fprintf(w, "the replica equals the stream: %d users up to sequence %d%s\n", res.Users, res.LastSeq, unchecked)
}

// describe is one line about d.
func describe(d replica.Difference) string {
	switch d.Kind {
	case replica.Missing:
		return fmt.Sprintf("missing   %s: in the stream (seq %d), not in the replica", d.UserID, d.Seq)
	case replica.Extra:
		return fmt.Sprintf("extra     %s: in the replica (version %d), not in the stream", d.UserID, d.Replica.Version)
	}
	if d.Stream == nil {
		return fmt.Sprintf("different %s: replica version %d, stream seq %d", d.UserID, d.Replica.Version, d.Seq)
	}
	var parts []string
	for _, f := range d.Fields {
		parts = append(parts, fmt.Sprintf("%s replica %s stream %s", f, field(*d.Replica, f), field(*d.Stream, f)))
	}
	return fmt.Sprintf("different %s: %s", d.UserID, strings.Join(parts, "; "))
}

// field is the value of u's field name as describe shows it.
func field(u events.User, name string) string {
	switch name {
	case "email":
		return fmt.Sprintf("%q", u.Email)
	case "display_name":
		return fmt.Sprintf("%q", u.DisplayName)
	case "roles":
		return "[" + strings.Join(u.Roles, ",") + "]"
	case "status":
		return u.Status
	case "version":
		return fmt.Sprint(u.Version)
	}
	return ""
}

// writeDeadLetters writes dls as a table and their count.
func writeDeadLetters(w io.Writer, dls []replica.DeadLetter) error {
	if len(dls) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tUSER\tSUBJECT\tRECORDED\tREASON")
	for _, d := range dls {
		user := "-"
		if d.UserID != nil {
			user = d.UserID.String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Seq, user, d.Subject, d.At.UTC().Format(time.RFC3339), oneLine(d.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d dead letters\n", len(dls))
	return nil
}

// deadLetterJSON is a dead letter as `dead-letters list --json` prints it.
type deadLetterJSON struct {
	Seq      uint64    `json:"seq"`
	Subject  string    `json:"subject"`
	UserID   *string   `json:"user_id"`
	Data     string    `json:"data"`
	Reason   string    `json:"reason"`
	Recorded time.Time `json:"recorded_at"`
}

// writeDeadLettersJSON writes one JSON object per dead letter.
func writeDeadLettersJSON(w io.Writer, dls []replica.DeadLetter) error {
	enc := json.NewEncoder(w)
	for _, d := range dls {
		j := deadLetterJSON{Seq: d.Seq, Subject: d.Subject, Data: string(d.Data), Reason: d.Reason, Recorded: d.At.UTC()}
		if d.UserID != nil {
			s := d.UserID.String()
			j.UserID = &s
		}
		if err := enc.Encode(j); err != nil {
			return err
		}
	}
	return nil
}

// writeRetried writes one line per dead letter retried, with its outcome.
func writeRetried(w io.Writer, results []replica.RetryResult) {
	for _, r := range results {
		user := ""
		if r.UserID != nil {
			user = " (user " + r.UserID.String() + ")"
		}
		line := fmt.Sprintf("seq %d%s: %s", r.Seq, user, r.Outcome)
		if r.Reason != "" {
			line += ": " + oneLine(r.Reason)
		}
		fmt.Fprintln(w, line)
	}
}

// writeRetrySummary writes the counts of a retry and returns how many still fail.
func writeRetrySummary(w io.Writer, results []replica.RetryResult) (failed int) {
	for _, r := range results {
		if r.Outcome == replica.RetryFailed {
			failed++
		}
	}
	fmt.Fprintf(w, "%d retried, %d resolved, %d still failing\n", len(results), len(results)-failed, failed)
	return failed
}

// oneLine is s with every run of white space (newlines included) made one space: drivers report
// multi-address failures on several lines.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// rate is n per second over d.
func rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
