package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

const evtToken = "events-test-token"

// evtAuth accepts only evtToken.
type evtAuth struct{}

func (evtAuth) Authenticate(_ context.Context, token string) error {
	if token != evtToken {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

// newEventsServer serves the API with a real event service on a fresh database.
func newEventsServer(t *testing.T) (*events.Service, *httptest.Server) {
	t.Helper()
	db := sqlstoretest.Open(t)
	svc := events.New(events.Config{Store: db})
	srv := httptest.NewServer(New(Deps{Auth: evtAuth{}, Events: svc}).Handler())
	t.Cleanup(srv.Close)
	return svc, srv
}

// evtStream is an open GET /events response.
type evtStream struct {
	resp *http.Response
	br   *bufio.Reader
}

// evtOpen opens GET /events (path may carry a query) with the given
// Last-Event-ID header ("" for none). The stream is bounded by a 10 s deadline.
func evtOpen(t *testing.T, srv *httptest.Server, path, lastID string) *evtStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+evtToken)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
	return &evtStream{resp: resp, br: bufio.NewReader(resp.Body)}
}

// evtFrame is one parsed SSE frame.
type evtFrame struct {
	raw, id, event, data string
	comment              bool
}

// next reads the next frame (up to a blank line).
func (s *evtStream) next(t *testing.T) evtFrame {
	t.Helper()
	var f evtFrame
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v (so far %q)", err, f.raw)
		}
		f.raw += line
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return f
		case strings.HasPrefix(line, ":"):
			f.comment = true
		case strings.HasPrefix(line, "id: "):
			f.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			f.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			f.data = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

// event reads the next event frame and checks it is well formed and about core-n.
func (s *evtStream) event(t *testing.T, n int) evtFrame {
	t.Helper()
	f := s.next(t)
	var env struct {
		ID         string `json:"id"`
		Source     string `json:"source"`
		DetailType string `json:"detail-type"`
		Time       string `json:"time"`
		Detail     struct{ CoreName string }
	}
	if err := json.Unmarshal([]byte(f.data), &env); err != nil {
		t.Fatalf("frame %q: data is not JSON: %v", f.raw, err)
	}
	if want := "id: " + env.ID + "\nevent: " + events.CoreCreated + "\ndata: " + f.data + "\n\n"; f.raw != want {
		t.Fatalf("frame\n%q\nwant\n%q", f.raw, want)
	}
	if env.Source != events.DefaultSource || env.DetailType != events.CoreCreated || !strings.HasSuffix(env.Time, "Z") {
		t.Errorf("envelope %s", f.data)
	}
	if want := "core-" + strconv.Itoa(n); env.Detail.CoreName != want {
		t.Fatalf("event %s, want %s", env.Detail.CoreName, want)
	}
	return f
}

func evtPublish(svc *events.Service, from, to int) {
	for i := from; i <= to; i++ {
		svc.Publish(context.Background(), events.CoreCreated, map[string]string{"coreName": "core-" + strconv.Itoa(i), "status": "success", "taskId": "t1"})
	}
}

func TestEventsStreamResume(t *testing.T) {
	svc, srv := newEventsServer(t)
	evtPublish(svc, 1, 5)

	// The query parameter is the fallback for clients that cannot set headers.
	s := evtOpen(t, srv, "/events?lastEventId="+events.FormatID(0), "")
	if ct, cc := s.resp.Header.Get("Content-Type"), s.resp.Header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-store" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	s.event(t, 1)
	second := s.event(t, 2)
	s.resp.Body.Close()

	s = evtOpen(t, srv, "/events", second.id)
	for i := 3; i <= 5; i++ {
		s.event(t, i)
	}
	evtPublish(svc, 6, 6)
	s.event(t, 6)

	// The service closing (broker shutdown) ends the stream.
	svc.Close()
	if line, err := s.br.ReadString('\n'); err == nil {
		t.Errorf("stream still open after Close: read %q", line)
	}
}

func TestEventsStreamHeartbeat(t *testing.T) {
	old := sseHeartbeat
	sseHeartbeat = 20 * time.Millisecond
	t.Cleanup(func() { sseHeartbeat = old })
	svc, srv := newEventsServer(t)
	s := evtOpen(t, srv, "/events", "")
	if f := s.next(t); !f.comment || f.id != "" {
		t.Fatalf("first frame %q, want a comment heartbeat", f.raw)
	}
	evtPublish(svc, 1, 1)
	for {
		if f := s.next(t); !f.comment {
			if !strings.Contains(f.data, "core-1") {
				t.Fatalf("frame %q, want core-1", f.raw)
			}
			break
		}
	}
	srv.CloseClientConnections()
}

func TestEventsStreamErrors(t *testing.T) {
	_, srv := newEventsServer(t)
	noStream := httptest.NewServer(New(Deps{Auth: evtAuth{}}).Handler())
	t.Cleanup(noStream.Close)
	tests := []struct {
		name   string
		srv    *httptest.Server
		token  string
		lastID string
		status int
		want   string
	}{
		{"no token", srv, "", "", http.StatusUnauthorized, "missing credentials"},
		{"bad Last-Event-ID", srv, evtToken, "abc", http.StatusBadRequest, "Last-Event-ID"},
		{"no event service", noStream, evtToken, "", http.StatusServiceUnavailable, "not available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tc.srv.URL+"/events", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.lastID != "" {
				req.Header.Set("Last-Event-ID", tc.lastID)
			}
			resp, err := tc.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Message string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != tc.status || !strings.Contains(body.Message, tc.want) {
				t.Errorf("status %d %q, want %d containing %q", resp.StatusCode, body.Message, tc.status, tc.want)
			}
		})
	}
}
