package health

import (
	"context"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/groupcommit"
)

// BatchStore is what a Store may add so that concurrent health reports are
// stored by group commit: with a thousand agents each having a report in
// flight, one transaction for many reports instead of one commit (one WAL
// flush) each. The Service uses it when its Store has it.
type BatchStore interface {
	// PutReports stores each report as PutReport would, in one transaction,
	// and returns one result per report, in order. Reports of a core that
	// does not exist get errkind.NotFound in their result without failing
	// the others. When one core has several reports in rs, only the one
	// with the latest ReportedAt (the last of those in rs on a tie) can be
	// stored; the others get Stored false. A non-nil error means nothing
	// was stored and applies to every report.
	PutReports(ctx context.Context, rs []Report) ([]PutResult, error)
}

// PutResult is one report's outcome in PutReports: what PutReport returns.
type PutResult struct {
	Stored bool
	Sync   bool
	Err    error
}

// Group commit limits.
const (
	// MaxBatch bounds the reports written in one transaction, so one
	// transaction stays short and the writer role moves on.
	MaxBatch = 500
	// WriteTimeout bounds one batch's write. The write does not end when
	// the writing caller's context does: the other callers' reports are in
	// it too.
	WriteTimeout = 10 * time.Second
)

// newGroupCommit returns the leader/follower group commit (package
// groupcommit) that stores concurrent reports through store, up to max in
// one PutReports call, each caller returning once its own report is
// written.
func newGroupCommit(store BatchStore, max int) *groupcommit.Group[Report, PutResult] {
	return groupcommit.New(func(ctx context.Context, reports []Report) ([]PutResult, error) {
		wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
		defer cancel()
		results, err := store.PutReports(wctx, reports)
		if err != nil {
			return nil, fmt.Errorf("store %d health reports: %w", len(reports), err)
		}
		return results, nil
	}, max)
}

// TouchStore is what a Store may add so that the signs of life of many
// cores (Touch: every deployment status or other message an agent sends)
// are recorded by group commit too: when a deployment reaches a thousand
// agents, a thousand status messages arrive within a second, and each
// would otherwise cost a transaction of its own while the deployment's
// batches are still being written.
type TouchStore interface {
	// TouchCores marks each core of seen ONLINE and moves its last-seen
	// time forward to the time given (never back), in one transaction, and
	// returns the names given that are not cores (nothing written for them).
	TouchCores(ctx context.Context, seen map[string]time.Time) (missing map[string]bool, err error)
}

// touch is one Touch call's item in the touches group commit.
type touch struct {
	core string
	at   time.Time
}

// newTouchCommit returns the group commit that records concurrent Touch
// calls through store, up to max in one TouchCores call. A core touched
// more than once in a batch is written once, with the latest time; each
// item's result is errkind.NotFound when its name is not a core.
func newTouchCommit(store TouchStore, max int) *groupcommit.Group[touch, error] {
	return groupcommit.New(func(ctx context.Context, touches []touch) ([]error, error) {
		wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
		defer cancel()
		seen := make(map[string]time.Time, len(touches))
		for _, t := range touches {
			if t.at.After(seen[t.core]) {
				seen[t.core] = t.at
			}
		}
		missing, err := store.TouchCores(wctx, seen)
		if err != nil {
			return nil, fmt.Errorf("record that %d cores were seen: %w", len(seen), err)
		}
		out := make([]error, len(touches))
		for i, t := range touches {
			if missing[t.core] {
				out[i] = errkind.New(errkind.NotFound, "core %s not found", t.core)
			}
		}
		return out, nil
	}, max)
}
