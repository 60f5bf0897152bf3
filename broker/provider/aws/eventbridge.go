package aws

import (
	"context"
	"fmt"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// EventEntry is one event for EventBridge.
type EventEntry struct {
	Source     string
	DetailType string
	Detail     string // a JSON object
	Time       time.Time
}

// maxEventEntries is PutEvents' limit of entries per call.
const maxEventEntries = 10

// PutEvents sends entries to the event bus (name or ARN; "" is the
// account's default bus) in calls of at most ten. Entries EventBridge fails
// with a transient code (throttling, internal failure) are sent again; any
// other failed entry makes PutEvents return an error naming it, so the
// caller retries the batch rather than lose events.
func (p *Provider) PutEvents(ctx context.Context, bus string, entries []EventEntry) error {
	for start := 0; start < len(entries); start += maxEventEntries {
		if err := p.putEventsChunk(ctx, bus, entries[start:min(start+maxEventEntries, len(entries))]); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) putEventsChunk(ctx context.Context, bus string, entries []EventEntry) error {
	pending := make([]ebtypes.PutEventsRequestEntry, len(entries))
	for i, e := range entries {
		pending[i] = ebtypes.PutEventsRequestEntry{
			Source: sdkaws.String(e.Source), DetailType: sdkaws.String(e.DetailType), Detail: sdkaws.String(e.Detail),
		}
		if !e.Time.IsZero() {
			pending[i].Time = sdkaws.Time(e.Time)
		}
		if bus != "" {
			pending[i].EventBusName = sdkaws.String(bus)
		}
	}
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		out, err := p.bus.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: pending})
		if err != nil {
			return mapErr(err, "put %d events to EventBridge", len(pending))
		}
		if out.FailedEntryCount == 0 {
			return nil
		}
		var retry []ebtypes.PutEventsRequestEntry
		var permanent []string
		for i, r := range out.Entries {
			if r.ErrorCode == nil || i >= len(pending) {
				continue
			}
			switch sdkaws.ToString(r.ErrorCode) {
			case "ThrottlingException", "InternalFailure", "InternalException":
				retry = append(retry, pending[i])
			default:
				permanent = append(permanent, fmt.Sprintf("%q: %s %s", sdkaws.ToString(pending[i].DetailType), sdkaws.ToString(r.ErrorCode), sdkaws.ToString(r.ErrorMessage)))
			}
		}
		if len(permanent) > 0 {
			return errkind.New(errkind.Invalid, "EventBridge refused %d event(s): %s", len(permanent), strings.Join(permanent, "; "))
		}
		if len(retry) == 0 || attempt == 6 {
			return errkind.New(errkind.Unavailable, "EventBridge failed %d event(s) %d times; retry later", out.FailedEntryCount, attempt)
		}
		pending = retry
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay *= 2
	}
}
