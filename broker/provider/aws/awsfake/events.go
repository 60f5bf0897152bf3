package awsfake

import (
	"encoding/json"
	"net/http"
	"regexp"
	"time"
)

// Event is one entry PutEvents accepted.
type Event struct {
	ID         string          `json:"id"`
	EventBus   string          `json:"eventBus"`
	Source     string          `json:"source"`
	DetailType string          `json:"detailType"`
	Detail     json.RawMessage `json:"detail"`
	Resources  []string        `json:"resources,omitempty"`
	Time       time.Time       `json:"time"`
}

// EventBridge limits (PutEvents API reference).
const (
	maxPutEventsEntries = 10
	maxPutEventsBytes   = 256 * 1024
)

var (
	eventBusRE = regexp.MustCompile(`^([/\.\-_A-Za-z0-9]{1,256}|arn:aws[\w-]*:events:[a-z0-9-]+:\d{12}:event-bus/[/\.\-_A-Za-z0-9]{1,256})$`)
	sourceRE   = regexp.MustCompile(`^[\x20-\x7e]{1,256}$`)
)

// Events returns the events PutEvents accepted, oldest first.
func (f *Fake) Events() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Event(nil), f.events...)
}

// extraMuxes are the services beyond IoT, Greengrass and S3, by signing name.
func (f *Fake) extraMuxes() map[string]http.Handler {
	events := http.NewServeMux()
	events.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents" {
			writeJSONError(w, errorf(http.StatusBadRequest, "UnknownOperationException", "the fake serves only AWSEvents.PutEvents, not %q", r.Header.Get("X-Amz-Target")))
			return
		}
		status, body, err := f.serve(r, "events", "PutEvents", f.putEvents)
		if err != nil {
			writeJSONError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	return map[string]http.Handler{"events": events}
}

func (f *Fake) putEvents(r *http.Request) (int, any, *apiError) {
	var in struct {
		Entries []struct {
			Source       string
			DetailType   string
			Detail       string
			EventBusName string
			Resources    []string
			Time         *float64
		}
	}
	if err := decodeBody(r, &in); err != nil {
		err.Code = "ValidationException"
		return 0, nil, err
	}
	if len(in.Entries) < 1 || len(in.Entries) > maxPutEventsEntries {
		return 0, nil, validation("1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length between 1 and %d", maxPutEventsEntries)
	}
	size := 0
	for _, e := range in.Entries {
		size += len(e.Source) + len(e.DetailType) + len(e.Detail)
		for _, res := range e.Resources {
			size += len(res)
		}
		if e.Time != nil {
			size += 14
		}
	}
	if size > maxPutEventsBytes {
		return 0, nil, validation("Total size of the entries in the request is over the limit.")
	}
	type result struct {
		EventID      string `json:"EventId,omitempty"`
		ErrorCode    string `json:"ErrorCode,omitempty"`
		ErrorMessage string `json:"ErrorMessage,omitempty"`
	}
	out := struct {
		FailedEntryCount int
		Entries          []result
	}{}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range in.Entries {
		bus := e.EventBusName
		if bus == "" {
			bus = "default"
		}
		var detail map[string]any
		var res result
		switch {
		case !eventBusRE.MatchString(bus):
			res = result{ErrorCode: "InvalidArgument", ErrorMessage: "Parameter EventBusName is not valid."}
		case !sourceRE.MatchString(e.Source):
			res = result{ErrorCode: "InvalidArgument", ErrorMessage: "Parameter Source is not valid. Reason: Source is a required argument."}
		case !sourceRE.MatchString(e.DetailType) || len(e.DetailType) > 128:
			res = result{ErrorCode: "InvalidArgument", ErrorMessage: "Parameter DetailType is not valid. Reason: DetailType is a required argument."}
		case json.Unmarshal([]byte(e.Detail), &detail) != nil || detail == nil:
			res = result{ErrorCode: "MalformedDetail", ErrorMessage: "Detail is malformed."}
		}
		if res.ErrorCode != "" {
			out.FailedEntryCount++
			out.Entries = append(out.Entries, res)
			continue
		}
		ev := Event{ID: newID(), EventBus: bus, Source: e.Source, DetailType: e.DetailType, Detail: json.RawMessage(e.Detail), Resources: e.Resources, Time: time.Now()}
		if e.Time != nil {
			ev.Time = time.UnixMilli(int64(*e.Time * 1000))
		}
		f.events = append(f.events, ev)
		out.Entries = append(out.Entries, result{EventID: ev.ID})
	}
	return http.StatusOK, out, nil
}
