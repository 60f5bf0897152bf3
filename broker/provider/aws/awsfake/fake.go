// Package awsfake is an in-process HTTP fake of the parts of AWS IoT Core,
// AWS IoT Greengrass V2, Amazon S3 and Amazon EventBridge that the aws
// provider calls, plus an MQTT data endpoint that acts as IoT Core. It speaks
// the real wire protocols (REST-JSON for IoT and Greengrass, REST-XML for S3),
// so the provider is tested with the real aws-sdk-go-v2 clients, and it checks
// requests the way AWS does: required members, name patterns and lengths, enum
// values and ARN formats, with AWS's error codes and status codes so the SDK
// decodes them into its typed errors.
//
// It keeps state (things, certificates and the CAs registered for them,
// policies and their versions, thing groups, core devices and client-device
// associations, components, deployments and job executions, S3 objects,
// events), enforces
// per-operation TPS quotas with ThrottlingException, and lets tests inject
// errors (FailNext) and latency (Latency). Requests are routed to a service by
// the SigV4 signing name in the Authorization header, so one server with one
// URL serves every service.
package awsfake

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Account and Region are the identity the fake's ARNs use.
const (
	Account = "123456789012"
	Region  = "us-east-1"
)

// DefaultQuotas are AWS's default per-account TPS limits for the operations
// the fake serves (AWS IoT Core and Greengrass V2 quotas pages). The aws
// provider's client-side defaults are the same numbers.
var DefaultQuotas = map[string]float64{
	"AddThingToThingGroup":         100,
	"AttachPolicy":                 15,
	"AttachThingPrincipal":         15,
	"CreateCertificateFromCsr":     15,
	"CreateKeysAndCertificate":     10,
	"CreatePolicy":                 10,
	"CreatePolicyVersion":          10,
	"CreateThing":                  15,
	"CreateThingGroup":             25,
	"DeleteCertificate":            10,
	"DeletePolicyVersion":          10,
	"DeleteThing":                  15,
	"DescribeCertificate":          10,
	"DescribeThing":                350,
	"DetachPolicy":                 15,
	"DetachThingPrincipal":         15,
	"GetPolicy":                    15,
	"ListAttachedPolicies":         15,
	"ListPolicyVersions":           10,
	"ListPrincipalThings":          10,
	"ListThingGroupsForThing":      10,
	"ListThingPrincipals":          10,
	"ListThingsInThingGroup":       25,
	"RegisterCertificate":          10,
	"RegisterCertificateWithoutCA": 10,
	"RegisterThing":                10,
	"RemoveThingFromThingGroup":    100,
	"UpdateCertificate":            10,
	"GetRegistrationCode":          10,
	"RegisterCACertificate":        10,
	"DescribeCACertificate":        10,

	"GetCoreDevice":    50,
	"DeleteCoreDevice": 10,
	"BatchAssociateClientDeviceWithCoreDevice":    10,
	"BatchDisassociateClientDeviceFromCoreDevice": 10,
	"ListClientDevicesAssociatedWithCoreDevice":   10,
	"ListInstalledComponents":                     10,
	"ListEffectiveDeployments":                    10,
	"DescribeComponent":                           10,

	"DescribeEndpoint":     10,
	"TagResource":          10,
	"DescribeThingGroup":   100,
	"DescribeJobExecution": 10,
	"CreateDeployment":     1,

	"PutObject":  3500,
	"GetObject":  5500,
	"HeadObject": 5500,

	"PutEvents": 10000,
}

// Fake is the fake AWS endpoint. Create it with New; it closes itself when
// the test ends.
type Fake struct {
	srv  *httptest.Server
	mqtt *mqttEndpoint // the IoT data endpoint (mqtt.go)

	mu        sync.Mutex
	calls     map[string]int
	throttled map[string]int
	failNext  map[string][]string
	latency   time.Duration
	quotas    map[string]float64
	buckets   map[string]*bucket // token buckets per operation
	iot       iotState
	gg        map[string]*coreDevice
	s3        map[string]map[string]object
	events    []Event

	deployments  map[string]*Deployment
	deployTokens map[string]string                // client token -> deployment id
	jobs         map[string]map[string]*execution // job id -> thing -> execution
	components   map[string]time.Time             // component version ARN -> creation (components.go)
	cas          caRegistry                       // registered CA certificates (cas.go)
}

// New starts a fake with AWS's default quotas and no S3 buckets on a
// loopback port; it closes itself when the test ends.
func New(t testing.TB) *Fake {
	t.Helper()
	f := newFake()
	f.srv = httptest.NewServer(f.Handler())
	t.Cleanup(f.srv.Close)
	if err := f.startMQTT("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.mqtt.close)
	return f
}

// Start starts a fake listening on addr (host:port, port 0 for any), for
// the awsfake command and benchmarks; Close stops it.
func Start(addr string) (*Fake, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("awsfake: listen on %s: %w", addr, err)
	}
	f := newFake()
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if err := f.startMQTT(host); err != nil {
		ln.Close()
		return nil, err
	}
	f.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	f.srv.Start()
	return f, nil
}

// Close stops a fake made by Start.
func (f *Fake) Close() {
	f.srv.Close()
	f.mqtt.close()
}

func newFake() *Fake {
	f := &Fake{
		calls:     map[string]int{},
		throttled: map[string]int{},
		failNext:  map[string][]string{},
		quotas:    map[string]float64{},
		buckets:   map[string]*bucket{},
		iot:       newIoTState(),
		gg:        map[string]*coreDevice{},
		s3:        map[string]map[string]object{},

		deployments:  map[string]*Deployment{},
		deployTokens: map[string]string{},
		jobs:         map[string]map[string]*execution{},
	}
	for op, q := range DefaultQuotas {
		f.quotas[op] = q
	}
	return f
}

// Handler serves the three services, routed by the SigV4 signing name, and
// the unsigned control API under /_fake/ (see control.go).
func (f *Fake) Handler() http.Handler {
	iotMux, ggMux, s3Mux, ctlMux := http.NewServeMux(), http.NewServeMux(), http.NewServeMux(), http.NewServeMux()
	f.routeIoT(iotMux)
	f.routeGreengrass(ggMux)
	f.routeS3(s3Mux)
	f.routeControl(ctlMux)
	f.routeMQTTControl(ctlMux)
	f.routeDeployments(func(pattern, op string, fn handlerFunc) { f.handle(iotMux, "iot", pattern, op, fn) },
		func(pattern, op string, fn handlerFunc) { f.handle(ggMux, "greengrass", pattern, op, fn) })
	extra := f.extraMuxes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_fake/") && r.Header.Get("Authorization") == "" {
			ctlMux.ServeHTTP(w, r)
			return
		}
		svc := signingService(r)
		switch svc {
		case "iot":
			iotMux.ServeHTTP(w, r)
		case "greengrass":
			ggMux.ServeHTTP(w, r)
		case "s3":
			s3Mux.ServeHTTP(w, r)
		default:
			if m := extra[svc]; m != nil {
				m.ServeHTTP(w, r)
				return
			}
			writeJSONError(w, &apiError{Status: http.StatusForbidden, Code: "MissingAuthenticationTokenException",
				Message: "Missing Authentication Token: sign the request with SigV4 for service iot, greengrass, s3 or events"})
		}
	})
}

// URL is the endpoint to give the SDK clients (BaseEndpoint).
func (f *Fake) URL() string { return f.srv.URL }

// Calls returns how many requests for op (an AWS operation name such as
// "CreateThing") reached the fake, including throttled and failed ones,
// plus the times RegisterThing performed op on the caller's behalf (see
// register.go).
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Throttled returns how many calls of op the quota refused.
func (f *Fake) Throttled(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.throttled[op]
}

// Quota returns op's TPS quota (0: none).
func (f *Fake) Quota(op string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quotas[op]
}

// FailNext makes the next call of op fail with the given AWS error code
// (for example "ThrottlingException", "InternalFailureException"). Calls
// queue: FailNext twice fails the next two calls.
func (f *Fake) FailNext(op, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext[op] = append(f.failNext[op], code)
}

// Latency delays every response by d.
func (f *Fake) Latency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// SetQuota sets op's TPS quota; tps <= 0 removes the quota.
func (f *Fake) SetQuota(op string, tps float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quotas[op] = tps
	delete(f.buckets, op)
}

// CreateBucket makes an empty S3 bucket (S3 has no implicit buckets).
func (f *Fake) CreateBucket(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.s3[name] == nil {
		f.s3[name] = map[string]object{}
	}
}

// bucket is a token bucket: capacity = one second of quota.
type bucket struct {
	tokens float64
	last   time.Time
}

// admit reports whether op is within its quota now. Callers hold f.mu.
func (f *Fake) admit(op string, now time.Time) bool {
	q := f.quotas[op]
	if q <= 0 {
		return true
	}
	capacity := max(q, 1)
	b := f.buckets[op]
	if b == nil {
		b = &bucket{tokens: capacity, last: now}
		f.buckets[op] = b
	}
	b.tokens = min(capacity, b.tokens+now.Sub(b.last).Seconds()*q)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// apiError is an AWS error response.
type apiError struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any // extra JSON members (resourceId, resourceArn)
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Common IoT errors.
func invalid(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "InvalidRequestException", format, args...)
}

func notFound(format string, args ...any) *apiError {
	return errorf(http.StatusNotFound, "ResourceNotFoundException", format, args...)
}

// statusOf is the HTTP status AWS uses for an error code injected with FailNext.
func statusOf(service, code string) int {
	switch code {
	case "ResourceNotFoundException", "NoSuchKey", "NoSuchBucket":
		return http.StatusNotFound
	case "ResourceAlreadyExistsException", "ConflictException", "DeleteConflictException", "VersionsLimitExceededException":
		return http.StatusConflict
	case "ThrottlingException":
		if service == "greengrass" {
			return http.StatusTooManyRequests
		}
		return http.StatusBadRequest
	case "InternalFailureException", "InternalServerException", "InternalError":
		return http.StatusInternalServerError
	case "ServiceUnavailableException", "SlowDown":
		return http.StatusServiceUnavailable
	case "UnauthorizedException":
		return http.StatusUnauthorized
	case "AccessDeniedException", "AccessDenied":
		return http.StatusForbidden
	case "LimitExceededException":
		return http.StatusGone
	}
	return http.StatusBadRequest
}

// handlerFunc serves one operation: it returns the 2xx status and the JSON
// body (nil for none), or an error.
type handlerFunc func(r *http.Request) (int, any, *apiError)

// handle registers op at pattern, wrapping it with call counting, latency,
// injected failures and the quota.
func (f *Fake) handle(mux *http.ServeMux, service, pattern, op string, h handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		status, body, err := f.serve(r, service, op, h)
		if service == "s3" {
			writeS3(w, status, body, err)
			return
		}
		if err != nil {
			writeJSONError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if body != nil {
			_ = json.NewEncoder(w).Encode(body)
		}
	})
}

func (f *Fake) serve(r *http.Request, service, op string, h handlerFunc) (int, any, *apiError) {
	f.mu.Lock()
	f.calls[op]++
	latency := f.latency
	var injected string
	if q := f.failNext[op]; len(q) > 0 {
		injected, f.failNext[op] = q[0], q[1:]
	}
	admitted := f.admit(op, time.Now())
	if !admitted {
		f.throttled[op]++
	}
	f.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
		}
	}
	switch {
	case injected != "":
		return 0, nil, errorf(statusOf(service, injected), injected, "injected failure of %s", op)
	case !admitted && service == "s3":
		return 0, nil, errorf(http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case !admitted:
		return 0, nil, errorf(statusOf(service, "ThrottlingException"), "ThrottlingException", "Rate exceeded for operation %s", op)
	}
	return h(r)
}

func writeJSONError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"message": e.Message}
	for k, v := range e.Extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.Code)
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeXMLError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.Status)
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		RequestID string `xml:"RequestId"`
	}{Code: e.Code, Message: e.Message, RequestID: "fake"})
}

// authRE extracts the service from a SigV4 credential scope.
var authRE = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/[a-z0-9-]+/([a-z0-9-]+)/aws4_request`)

// credRE extracts the service from a presigned URL's X-Amz-Credential.
var credRE = regexp.MustCompile(`^[^/]+/\d{8}/[a-z0-9-]+/([a-z0-9-]+)/aws4_request$`)

// signingService is the SigV4 service name the request was signed for
// (Authorization header, or X-Amz-Credential of a presigned URL), or "".
func signingService(r *http.Request) string {
	if m := authRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1]
	}
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256" && q.Get("X-Amz-Signature") != "" {
		if m := credRE.FindStringSubmatch(q.Get("X-Amz-Credential")); m != nil {
			return m[1]
		}
	}
	return ""
}

// decodeBody decodes a JSON request body into v.
func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return invalid("could not parse the request body as JSON: %v", err)
	}
	return nil
}

// epoch is a timestamp in the REST-JSON wire format (epoch seconds).
func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }
