package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

const enrollTestAPIToken = "api-token"

type enrollTestAuth struct{}

func (enrollTestAuth) Authenticate(_ context.Context, token string) error {
	if token != enrollTestAPIToken {
		return errkind.New(errkind.Unauthorized, "invalid token")
	}
	return nil
}

// enrollFakeService records its calls and answers with fixed results.
type enrollFakeService struct {
	gotCore      string
	gotExpiresIn time.Duration
	gotReq       enroll.Request
	tokenErr     error
	enrollErr    error
}

func (f *enrollFakeService) CreateToken(ctx context.Context, core string, expiresIn time.Duration) (enroll.Token, error) {
	f.gotCore, f.gotExpiresIn = core, expiresIn
	if f.tokenErr != nil {
		return enroll.Token{}, f.tokenErr
	}
	if expiresIn == 0 {
		expiresIn = enroll.DefaultTokenLifetime
	}
	return enroll.Token{Token: "gge_secret", CoreName: core, ExpiresAt: time.UnixMilli(1_700_000_000_123).Add(expiresIn)}, nil
}

func (f *enrollFakeService) Enroll(ctx context.Context, req enroll.Request) (enroll.Response, error) {
	f.gotReq = req
	if f.enrollErr != nil {
		return enroll.Response{}, f.enrollErr
	}
	return enroll.Response{
		ThingName: req.CoreName, CertificatePem: "CERT", CaCertificatePem: "CA", ServerCaCertificatePem: "SERVER CA",
		InstallerConfig: "system: {}\n", MQTTEndpoint: "localhost:8883", BrokerURL: "http://localhost:8080", Mode: "local",
	}, nil
}

func enrollTestServer(t *testing.T, svc EnrollmentService) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Deps{Auth: enrollTestAuth{}, Enrollment: svc}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

// enrollDo sends a request and returns the status, headers and body.
func enrollDo(t *testing.T, srv *httptest.Server, method, path, body, token string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func enrollMessage(t *testing.T, body []byte) string {
	t.Helper()
	var e cdf.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not {\"message\"}: %v", body, err)
	}
	return e.Message
}

func TestCreateEnrollmentToken(t *testing.T) {
	tests := []struct {
		name          string
		path          string
		body          string
		token         string
		svcErr        error
		wantStatus    int
		wantExpiresIn time.Duration
		wantMsg       string
	}{
		{name: "empty body uses the default", path: "/cores/core-1/enrollmentTokens", token: enrollTestAPIToken, wantStatus: 201},
		{name: "empty object uses the default", path: "/cores/core-1/enrollmentTokens", body: "{}", token: enrollTestAPIToken, wantStatus: 201},
		{name: "explicit lifetime", path: "/cores/core-1/enrollmentTokens", body: `{"expiresInSeconds":600}`, token: enrollTestAPIToken, wantStatus: 201, wantExpiresIn: 10 * time.Minute},
		{name: "too short", path: "/cores/core-1/enrollmentTokens", body: `{"expiresInSeconds":59}`, token: enrollTestAPIToken, wantStatus: 400, wantMsg: "expiresInSeconds must be from 60 to 2592000"},
		{name: "explicit zero", path: "/cores/core-1/enrollmentTokens", body: `{"expiresInSeconds":0}`, token: enrollTestAPIToken, wantStatus: 400, wantMsg: "got 0"},
		{name: "huge", path: "/cores/core-1/enrollmentTokens", body: `{"expiresInSeconds":9223372036854775807}`, token: enrollTestAPIToken, wantStatus: 400, wantMsg: "expiresInSeconds must be"},
		{name: "not a number", path: "/cores/core-1/enrollmentTokens", body: `{"expiresInSeconds":"600"}`, token: enrollTestAPIToken, wantStatus: 400, wantMsg: "expiresInSeconds must be a number"},
		{name: "malformed", path: "/cores/core-1/enrollmentTokens", body: `{`, token: enrollTestAPIToken, wantStatus: 400, wantMsg: "malformed JSON"},
		{name: "bad core name", path: "/cores/a:b/enrollmentTokens", token: enrollTestAPIToken, wantStatus: 400, wantMsg: "is not valid"},
		{name: "unknown core", path: "/cores/nope/enrollmentTokens", token: enrollTestAPIToken, wantStatus: 404,
			svcErr: errkind.New(errkind.NotFound, `core "nope" does not exist: create it with POST /coreTasks first`), wantMsg: "create it with POST /coreTasks first"},
		{name: "no token", path: "/cores/core-1/enrollmentTokens", wantStatus: 401, wantMsg: "missing credentials"},
		{name: "wrong token", path: "/cores/core-1/enrollmentTokens", token: "nope", wantStatus: 401, wantMsg: "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &enrollFakeService{tokenErr: tt.svcErr}
			srv := enrollTestServer(t, svc)
			status, hdr, body := enrollDo(t, srv, "POST", tt.path, tt.body, tt.token)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", status, tt.wantStatus, body)
			}
			if tt.wantStatus != 201 {
				if msg := enrollMessage(t, body); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
				}
				return
			}
			if svc.gotCore != "core-1" || svc.gotExpiresIn != tt.wantExpiresIn {
				t.Errorf("service got (%q, %v), want (core-1, %v)", svc.gotCore, svc.gotExpiresIn, tt.wantExpiresIn)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", hdr.Get("Cache-Control"))
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			lifetime := tt.wantExpiresIn
			if lifetime == 0 {
				lifetime = 24 * time.Hour
			}
			want := map[string]any{
				"token":     "gge_secret",
				"coreName":  "core-1",
				"expiresAt": time.UnixMilli(1_700_000_000_123).Add(lifetime).UTC().Format(cdf.TimeLayout),
			}
			if len(got) != len(want) {
				t.Errorf("body = %v, want exactly %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestEnrollHandler(t *testing.T) {
	const good = `{"coreName":"core-1","token":"gge_abc","csrPem":"-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n"}`
	tests := []struct {
		name       string
		body       string
		svcErr     error
		wantStatus int
		wantMsg    string
	}{
		{name: "ok without an API token", body: good, wantStatus: 200},
		{name: "used token", body: good, svcErr: errkind.New(errkind.Unauthorized, "enrollment token has already been used"), wantStatus: 401, wantMsg: "enrollment token has already been used"},
		{name: "expired token", body: good, svcErr: errkind.New(errkind.Unauthorized, "enrollment token has expired"), wantStatus: 401, wantMsg: "has expired"},
		{name: "bad CSR", body: good, svcErr: errkind.New(errkind.Invalid, "csrPem is not a valid certificate signing request"), wantStatus: 400, wantMsg: "csrPem is not a valid"},
		{name: "empty body", body: "", wantStatus: 400, wantMsg: "the request body is empty"},
		{name: "malformed", body: `{"coreName":`, wantStatus: 400, wantMsg: "malformed JSON"},
		{name: "bad core name", body: `{"coreName":"a b","token":"t","csrPem":"c"}`, wantStatus: 400, wantMsg: "coreName"},
		{name: "missing token", body: `{"coreName":"core-1","csrPem":"c"}`, wantStatus: 400, wantMsg: "token is required"},
		{name: "missing CSR", body: `{"coreName":"core-1","token":"t"}`, wantStatus: 400, wantMsg: "csrPem is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &enrollFakeService{enrollErr: tt.svcErr}
			srv := enrollTestServer(t, svc)
			status, _, body := enrollDo(t, srv, "POST", "/enroll", tt.body, "")
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", status, tt.wantStatus, body)
			}
			if tt.wantStatus != 200 {
				if msg := enrollMessage(t, body); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
				}
				return
			}
			if svc.gotReq.CoreName != "core-1" || svc.gotReq.Token != "gge_abc" || !strings.Contains(svc.gotReq.CsrPem, "CERTIFICATE REQUEST") {
				t.Errorf("service got %+v", svc.gotReq)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"thingName": "core-1", "certificatePem": "CERT", "caCertificatePem": "CA", "serverCaCertificatePem": "SERVER CA",
				"installerConfig": "system: {}\n", "mqttEndpoint": "localhost:8883", "brokerUrl": "http://localhost:8080", "mode": "local",
			}
			if len(got) != len(want) {
				t.Errorf("body = %v, want exactly the keys of %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestEnrollRoutesAuth(t *testing.T) {
	api := New(Deps{})
	for _, rt := range api.Routes() {
		switch rt.Pattern {
		case "POST /enroll":
			if !rt.Open {
				t.Errorf("%s must be open (the one-time token is in the body)", rt.Pattern)
			}
		case "POST /cores/{name}/enrollmentTokens":
			if rt.Open {
				t.Errorf("%s must need an API token", rt.Pattern)
			}
		}
	}
}

func FuzzDecodeEnroll(f *testing.F) {
	f.Add([]byte(`{"coreName":"core-1","token":"gge_abc","csrPem":"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----"}`))
	f.Add([]byte(`{"coreName":"a:b","token":"","csrPem":null}`))
	f.Add([]byte(`{"coreName":1}`))
	f.Add([]byte(`[[[[`))
	f.Add([]byte(``))
	f.Add([]byte(`{"expiresInSeconds":-1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeEnroll(body)
		if err == nil {
			if checkName("coreName", req.CoreName) != nil || strings.TrimSpace(req.Token) == "" || strings.TrimSpace(req.CsrPem) == "" {
				t.Errorf("decodeEnroll accepted an invalid request %+v", req)
			}
		} else if !errkind.Is(err, errkind.Invalid) {
			t.Errorf("decodeEnroll error %v is not Invalid", err)
		}
		var tr enrollmentTokenRequest
		if err := DecodeBody(body, &tr); err == nil {
			if d, err := tokenLifetime(tr); err == nil && d != 0 && (d < enroll.MinTokenLifetime || d > enroll.MaxTokenLifetime) {
				t.Errorf("tokenLifetime accepted %v", d)
			}
		}
	})
}
