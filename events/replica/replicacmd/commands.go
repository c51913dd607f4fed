package replicacmd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/authmesh/events/replica"
)

func (c *cli) status(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as one JSON object")
	if code := c.parse(fs, args, "status [--json]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("status", err)
	}
	defer cn.close()
	rep, err := replica.Status(ctx, cn.pool, cn.js, c.name)
	if err != nil {
		return c.fail("status", err)
	}
	if *asJSON {
		err = json.NewEncoder(c.stdout).Encode(rep)
	} else {
		err = writeStatus(c.stdout, rep, c.name)
	}
	if err != nil {
		return c.fail("status", err)
	}
	return ExitOK
}

func (c *cli) rebuild(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fromSeq := fs.Uint64("from-seq", 0, "re-apply the stream from this `sequence` over a copy of the current replica")
	since := fs.String("since", "", "re-apply the events stored since this `time` (RFC 3339, e.g. 2025-01-02T15:04:05Z) over a copy of the current replica")
	lastPerSubject := fs.Bool("last-per-subject", false, "read only the last message of each subject (the current state; cost grows with users, not history); docs/operations.md says when the full read is needed instead")
	const synopsis = "rebuild [--from-seq N | --since RFC3339 | --last-per-subject]"
	if code := c.parse(fs, args, synopsis); code >= 0 {
		return code
	}
	var opts replica.RebuildOptions
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set["from-seq"] && set["since"]:
		return c.usageError("rebuild", "--from-seq and --since are exclusive", synopsis)
	case *lastPerSubject && (set["from-seq"] || set["since"]):
		return c.usageError("rebuild", "--last-per-subject rebuilds the current state from an empty copy: it takes neither --from-seq nor --since", synopsis)
	case set["from-seq"] && *fromSeq == 0:
		return c.usageError("rebuild", "--from-seq must be at least 1", synopsis)
	case set["since"]:
		t, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			return c.usageError("rebuild", fmt.Sprintf("--since %q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", *since), synopsis)
		}
		opts.Since = t
	}
	opts.FromSeq = *fromSeq
	opts.LastPerSubject = *lastPerSubject

	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("rebuild", err)
	}
	defer cn.close()
	if err := replica.Migrate(ctx, cn.pool); err != nil {
		return c.fail("rebuild", err)
	}
	bar := newProgress(c.stdout, "rebuild")
	opts.Progress = bar.update
	res, err := replica.Rebuild(ctx, cn.pool, cn.js, opts)
	bar.finish()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(c.stderr, "%s replica rebuild: interrupted after %d events; the live replica is untouched\n", c.name, res.Read)
			return ExitFailure
		}
		return c.fail("rebuild", err)
	}
	writeRebuild(c.stdout, opts, res, c.name)
	if res.LastPerSubject && res.Invalid > 0 {
		fmt.Fprintf(c.stderr, "%s replica rebuild: warning: %d last messages could not be applied; their users hold the newest state of their other subjects, or are missing: a full rebuild (without --last-per-subject) takes their previous good versions\n", c.name, res.Invalid)
	}
	return ExitOK
}

func (c *cli) verify(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	if code := c.parse(fs, args, "verify"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, true)
	if err != nil {
		return c.fail("verify", err)
	}
	defer cn.close()
	bar := newProgress(c.stderr, "verify")
	res, err := replica.Verify(ctx, cn.pool, cn.js, bar.update)
	bar.finish()
	if err != nil {
		return c.fail("verify", err)
	}
	writeVerify(c.stdout, res)
	if len(res.Differences) > 0 {
		return ExitFailure
	}
	return ExitOK
}

func (c *cli) deadLetters(ctx context.Context, args []string) int {
	action := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	switch action {
	case "list":
		return c.listDeadLetters(ctx, args)
	case "retry":
		return c.retryDeadLetters(ctx, args)
	}
	fmt.Fprintf(c.stderr, "%s replica dead-letters: unknown action %q\nusage: %s replica dead-letters [list [--json] | retry [--seq N]]\n", c.name, action, c.name)
	return ExitUsage
}

func (c *cli) listDeadLetters(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("dead-letters list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per dead letter")
	if code := c.parse(fs, args, "dead-letters list [--json]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, false)
	if err != nil {
		return c.fail("dead-letters", err)
	}
	defer cn.close()
	dls, err := replica.DeadLetters(ctx, cn.pool)
	if err != nil {
		return c.fail("dead-letters", err)
	}
	if *asJSON {
		err = writeDeadLettersJSON(c.stdout, dls)
	} else {
		err = writeDeadLetters(c.stdout, dls)
	}
	if err != nil {
		return c.fail("dead-letters", err)
	}
	return ExitOK
}

func (c *cli) retryDeadLetters(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("dead-letters retry", flag.ContinueOnError)
	seq := fs.Uint64("seq", 0, "retry only the dead letter at this stream `sequence` (default: all)")
	if code := c.parse(fs, args, "dead-letters retry [--seq N]"); code >= 0 {
		return code
	}
	cn, err := c.connect(ctx, false)
	if err != nil {
		return c.fail("dead-letters retry", err)
	}
	defer cn.close()
	// What was retried is shown even when the retries stopped on an error.
	results, err := replica.Retry(ctx, cn.pool, *seq)
	writeRetried(c.stdout, results)
	if err != nil {
		return c.fail("dead-letters retry", err)
	}
	if failed := writeRetrySummary(c.stdout, results); failed > 0 {
		return ExitFailure
	}
	return ExitOK
}
