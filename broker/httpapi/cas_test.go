package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

const caTestToken = "ca-test-token"

// caTestAuth accepts only caTestToken.
type caTestAuth struct{}

func (caTestAuth) Authenticate(ctx context.Context, token string) error {
	if token != caTestToken {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

// caFakeService records calls and answers with canned results.
type caFakeService struct {
	list    []ca.CA
	result  ca.CA
	err     error
	calls   []string
	lastGen struct {
		cn   string
		days int
		alg  string
	}
	lastImport struct{ cert, key string }
}

func (f *caFakeService) List(ctx context.Context) ([]ca.CA, error) {
	f.calls = append(f.calls, "List")
	return f.list, f.err
}

func (f *caFakeService) Import(ctx context.Context, certPEM, keyPEM string) (ca.CA, error) {
	f.calls = append(f.calls, "Import")
	f.lastImport.cert, f.lastImport.key = certPEM, keyPEM
	return f.result, f.err
}

func (f *caFakeService) Generate(ctx context.Context, cn string, days int, alg string) (ca.CA, error) {
	f.calls = append(f.calls, "Generate")
	f.lastGen.cn, f.lastGen.days, f.lastGen.alg = cn, days, alg
	return f.result, f.err
}

func caTestServer(t *testing.T, svc CAService) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Deps{CAs: svc, Auth: caTestAuth{}}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

// caDo sends a request and returns the status, the location header and the decoded body.
func caDo(t *testing.T, srv *httptest.Server, method, body, token string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/certificateAuthorities", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/vnd.aws-cdf-v1.0+json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response %d is not a JSON object: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, resp.Header.Get("Location"), out
}

var caSample = ca.CA{
	ID:             "ab12",
	Subject:        "CN=fleet CA",
	NotAfter:       time.Date(2035, 1, 2, 3, 4, 5, 678_900_000, time.UTC),
	Default:        true,
	KeyAlgorithm:   "EC-P256",
	CertificatePem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
}

var caSampleJSON = map[string]any{
	"caId":           "ab12",
	"subject":        "CN=fleet CA",
	"notAfter":       "2035-01-02T03:04:05.678Z",
	"default":        true,
	"keyAlgorithm":   "EC-P256",
	"certificatePem": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
}

func caJSONEqual(t *testing.T, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("body\n got %s\nwant %s", g, w)
	}
}

func TestListCAs(t *testing.T) {
	t.Run("list", func(t *testing.T) {
		other := caSample
		other.ID, other.Default, other.KeyAlgorithm = "cd34", false, "RSA-2048"
		srv := caTestServer(t, &caFakeService{list: []ca.CA{caSample, other}})
		status, _, body := caDo(t, srv, "GET", "", caTestToken)
		if status != http.StatusOK {
			t.Fatalf("status %d: %v", status, body)
		}
		otherJSON := map[string]any{}
		for k, v := range caSampleJSON {
			otherJSON[k] = v
		}
		otherJSON["caId"], otherJSON["default"], otherJSON["keyAlgorithm"] = "cd34", false, "RSA-2048"
		caJSONEqual(t, body, map[string]any{"certificateAuthorities": []any{caSampleJSON, otherJSON}})
	})
	t.Run("empty list is an array", func(t *testing.T) {
		srv := caTestServer(t, &caFakeService{})
		status, _, body := caDo(t, srv, "GET", "", caTestToken)
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		caJSONEqual(t, body, map[string]any{"certificateAuthorities": []any{}})
	})
	t.Run("no token", func(t *testing.T) {
		fake := &caFakeService{}
		status, _, body := caDo(t, caTestServer(t, fake), "GET", "", "")
		if status != http.StatusUnauthorized || body["message"] == nil || len(fake.calls) != 0 {
			t.Fatalf("status %d, body %v, calls %v", status, body, fake.calls)
		}
	})
	t.Run("store failure", func(t *testing.T) {
		status, _, body := caDo(t, caTestServer(t, &caFakeService{err: io.ErrUnexpectedEOF}), "GET", "", caTestToken)
		if status != http.StatusInternalServerError || !strings.Contains(body["message"].(string), "internal error") {
			t.Fatalf("status %d, body %v", status, body)
		}
	})
}

func TestCreateCA(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		svcErr     error
		wantStatus int
		wantCall   string
		wantMsg    string
		check      func(t *testing.T, f *caFakeService)
	}{
		{
			name: "import", body: `{"certificatePem":"CERT","privateKeyPem":"KEY"}`,
			wantStatus: 201, wantCall: "Import",
			check: func(t *testing.T, f *caFakeService) {
				if f.lastImport.cert != "CERT" || f.lastImport.key != "KEY" {
					t.Fatalf("Import got %+v", f.lastImport)
				}
			},
		},
		{
			name: "generate", body: `{"commonName":"fleet CA","daysExpiry":30,"keyAlgorithm":"RSA-2048"}`,
			wantStatus: 201, wantCall: "Generate",
			check: func(t *testing.T, f *caFakeService) {
				if f.lastGen.cn != "fleet CA" || f.lastGen.days != 30 || f.lastGen.alg != "RSA-2048" {
					t.Fatalf("Generate got %+v", f.lastGen)
				}
			},
		},
		{
			name: "generate with defaults", body: `{"commonName":"fleet CA"}`,
			wantStatus: 201, wantCall: "Generate",
			check: func(t *testing.T, f *caFakeService) {
				if f.lastGen.days != 0 || f.lastGen.alg != "" {
					t.Fatalf("Generate got %+v", f.lastGen)
				}
			},
		},
		{
			name: "import with only a key reaches the service", body: `{"privateKeyPem":"KEY"}`,
			svcErr: errkind.New(errkind.Invalid, "certificatePem is required"), wantStatus: 400, wantCall: "Import", wantMsg: "certificatePem is required",
		},
		{name: "mixed", body: `{"certificatePem":"C","privateKeyPem":"K","commonName":"x"}`, wantStatus: 400, wantMsg: "mixes import and generate"},
		{name: "mixed days", body: `{"certificatePem":"C","daysExpiry":3}`, wantStatus: 400, wantMsg: "not both"},
		{name: "neither", body: `{"name":"x"}`, wantStatus: 400, wantMsg: "names no certificate authority"},
		{name: "empty object", body: `{}`, wantStatus: 400, wantMsg: `send {"certificatePem","privateKeyPem"} to import`},
		{name: "zero days", body: `{"commonName":"x","daysExpiry":0}`, wantStatus: 400, wantMsg: "daysExpiry must be a whole number of days of at least 1"},
		{name: "days not a number", body: `{"commonName":"x","daysExpiry":"ten"}`, wantStatus: 400, wantMsg: "daysExpiry must be a number"},
		{name: "malformed JSON", body: `{"commonName":`, wantStatus: 400, wantMsg: "malformed JSON"},
		{name: "empty body", body: ``, wantStatus: 400, wantMsg: "body is empty"},
		{
			name: "invalid from the service", body: `{"certificatePem":"C","privateKeyPem":"K"}`,
			svcErr: errkind.New(errkind.Invalid, "the certificate \"CN=x\" is not a CA certificate"), wantStatus: 400, wantCall: "Import", wantMsg: "is not a CA certificate",
		},
		{
			name: "conflict from the service", body: `{"certificatePem":"C","privateKeyPem":"K"}`,
			svcErr: errkind.New(errkind.Conflict, "certificate authority ab12 is already imported"), wantStatus: 409, wantCall: "Import", wantMsg: "already imported",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &caFakeService{result: caSample, err: tt.svcErr}
			status, location, body := caDo(t, caTestServer(t, fake), "POST", tt.body, caTestToken)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %v", status, tt.wantStatus, body)
			}
			if got := strings.Join(fake.calls, ","); got != tt.wantCall {
				t.Fatalf("service calls %q, want %q", got, tt.wantCall)
			}
			if tt.wantMsg != "" {
				msg, _ := body["message"].(string)
				if !strings.Contains(msg, tt.wantMsg) {
					t.Fatalf("message %q does not contain %q", msg, tt.wantMsg)
				}
				return
			}
			if location != "/certificateAuthorities/ab12" {
				t.Fatalf("location %q", location)
			}
			caJSONEqual(t, body, caSampleJSON)
			if tt.check != nil {
				tt.check(t, fake)
			}
		})
	}
}

// TestCAsWithAuthority drives the handlers with the real Authority.
func TestCAsWithAuthority(t *testing.T) {
	key := make([]byte, ca.SecretsKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	authority := ca.New(ca.Config{Store: newCATestStore(), SecretsKey: key})
	def, _, err := authority.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := caTestServer(t, authority)

	status, location, gen := caDo(t, srv, "POST", `{"commonName":"ops CA","daysExpiry":90,"keyAlgorithm":"RSA-2048"}`, caTestToken)
	if status != http.StatusCreated {
		t.Fatalf("generate: %d %v", status, gen)
	}
	if gen["subject"] != "CN=ops CA" || gen["keyAlgorithm"] != "RSA-2048" || gen["default"] != false || location != "/certificateAuthorities/"+gen["caId"].(string) {
		t.Fatalf("generated %v at %q", gen, location)
	}
	cert, err := certs.ParseCertificate(gen["certificatePem"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if certs.ID(cert) != gen["caId"] {
		t.Fatal("caId is not the SHA-256 of the certificate")
	}

	// Importing a certificate with a key that is not its own is refused with a reason.
	otherKey, _ := certs.GenerateKey("")
	otherPEM, _ := certs.EncodeKey(otherKey)
	reqBody, _ := json.Marshal(map[string]string{"certificatePem": def.CertificatePem, "privateKeyPem": otherPEM})
	status, _, body := caDo(t, srv, "POST", string(reqBody), caTestToken)
	if status != http.StatusBadRequest || !strings.Contains(body["message"].(string), "does not belong to the certificate") {
		t.Fatalf("import with a wrong key: %d %v", status, body)
	}
	status, _, body = caDo(t, srv, "POST", `{"commonName":"x","keyAlgorithm":"DSA"}`, caTestToken)
	if status != http.StatusBadRequest || !strings.Contains(body["message"].(string), "not supported") {
		t.Fatalf("generate with a bad algorithm: %d %v", status, body)
	}

	status, _, list := caDo(t, srv, "GET", "", caTestToken)
	if status != http.StatusOK {
		t.Fatalf("list: %d", status)
	}
	cas := list["certificateAuthorities"].([]any)
	if len(cas) != 2 || cas[0].(map[string]any)["caId"] != def.ID || cas[0].(map[string]any)["default"] != true {
		t.Fatalf("list = %v", list)
	}
}

// caTestStore is a minimal in-memory ca.Store.
type caTestStore struct {
	mu   sync.Mutex
	recs []ca.Record
}

func newCATestStore() *caTestStore { return &caTestStore{} }

func (s *caTestStore) InsertCA(ctx context.Context, rec ca.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if r.ID == rec.ID {
			return errkind.New(errkind.Conflict, "exists")
		}
	}
	rec.Default = false
	s.recs = append(s.recs, rec)
	return nil
}

func (s *caTestStore) CreateDefaultCA(ctx context.Context, rec ca.Record) (ca.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if r.Default {
			return r, false, nil
		}
	}
	rec.Default = true
	s.recs = append([]ca.Record{rec}, s.recs...)
	return rec, true, nil
}

func (s *caTestStore) GetCA(ctx context.Context, id string) (ca.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if r.ID == id {
			return r, nil
		}
	}
	return ca.Record{}, errkind.New(errkind.NotFound, "not found")
}

func (s *caTestStore) DefaultCA(ctx context.Context) (ca.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if r.Default {
			return r, nil
		}
	}
	return ca.Record{}, errkind.New(errkind.NotFound, "not found")
}

func (s *caTestStore) ListCAs(ctx context.Context) ([]ca.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ca.Record(nil), s.recs...), nil
}
