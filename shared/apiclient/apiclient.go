// Package apiclient is a small typed Go client for the ggfleet broker's REST
// API, used by `ggagent enroll` today and by the operator CLI and the e2e
// tests later. It speaks plain JSON over HTTP(S), surfaces the broker's
// {"message"} errors as *APIError, and can pin the broker's CA by the
// SHA-256 of its certificate (--ca-sha256), so a device can trust a broker
// that serves a certificate from its own CA without any prior setup.
//
// stdlib only: the agent links it.
package apiclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds one request when Config.HTTPClient is nil.
const DefaultTimeout = 2 * time.Minute

// maxResponseBytes bounds how much of a response body is read.
const maxResponseBytes = 32 << 20

// Config configures a Client.
type Config struct {
	// BaseURL is the broker's API root, http:// or https://, e.g.
	// https://broker.example:8080. Plain http:// is allowed; callers should
	// warn about it.
	BaseURL string
	// Token is sent as "Authorization: Bearer" on calls that need it
	// (everything but Enroll and Health). Optional.
	Token string
	// CASHA256 pins the broker's CA: the hex SHA-256 of the CA
	// certificate's DER (colons and case are ignored). The broker must
	// present that CA in its chain, and its certificate must chain to it.
	// Only for https:// URLs.
	CASHA256 string
	// RootCAs verifies the broker when CASHA256 is empty (nil = the system roots).
	RootCAs *x509.CertPool
	// HTTPClient is used as is when no TLS option is set; with CASHA256 or
	// RootCAs its transport (an *http.Transport or nil) is cloned and
	// reconfigured. nil means a client with DefaultTimeout.
	HTTPClient *http.Client
	// UserAgent is sent with every request (default "ggfleet-apiclient").
	UserAgent string
}

// Client calls one broker. It is safe for concurrent use.
type Client struct {
	base  string // without a trailing slash
	token string
	ua    string
	hc    *http.Client
}

// APIError is a response with a 4xx or 5xx status; Message is the broker's
// {"message"} text (or the status text when the body had none).
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("the broker answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// New returns a Client for cfg. It contacts nothing.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.BaseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("broker URL %q is not valid: use http://HOST:PORT or https://HOST:PORT", cfg.BaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("broker URL %q must not carry a query, fragment or user info", cfg.BaseURL)
	}
	c := &Client{
		base:  strings.TrimSuffix(u.String(), "/"),
		token: cfg.Token,
		ua:    cfg.UserAgent,
		hc:    cfg.HTTPClient,
	}
	if c.ua == "" {
		c.ua = "ggfleet-apiclient"
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: DefaultTimeout}
	}
	var pin []byte
	if cfg.CASHA256 != "" {
		if pin, err = ParseSHA256(cfg.CASHA256); err != nil {
			return nil, err
		}
		if u.Scheme != "https" {
			return nil, fmt.Errorf("a CA pin (--ca-sha256) needs an https:// broker URL, got %s", c.base)
		}
	}
	if pin != nil || cfg.RootCAs != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
		if pin != nil {
			// The standard verification is replaced by verifyPinned, which
			// trusts only the pinned CA (and still checks the host name).
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = verifyPinned(pin, u.Hostname())
		}
		hc, err := withTLS(c.hc, tc)
		if err != nil {
			return nil, err
		}
		c.hc = hc
	}
	return c, nil
}

// BaseURL is the broker URL the client calls, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// ParseSHA256 reads a hex SHA-256 fingerprint, ignoring case and the colons
// `openssl x509 -fingerprint` prints.
func ParseSHA256(s string) ([]byte, error) {
	clean := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	b, err := hex.DecodeString(clean)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q is not a hex SHA-256 (64 hex digits, as GET /certificateAuthorities shows in caId)", s)
	}
	return b, nil
}

func withTLS(base *http.Client, tc *tls.Config) (*http.Client, error) {
	var tr *http.Transport
	switch t := base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("apiclient: cannot set TLS options on an HTTPClient whose transport is %T", t)
	}
	tr.TLSClientConfig = tc
	hc := *base
	hc.Transport = tr
	return &hc, nil
}

// verifyPinned checks the presented chain against the CA whose DER hashes
// to pin, which the server must present among its certificates (the
// broker's --tls-auto serves leaf + CA).
func verifyPinned(pin []byte, host string) func(tls.ConnectionState) error {
	want := hex.EncodeToString(pin)
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("the broker presented no certificate")
		}
		var ca *x509.Certificate
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			sum := sha256.Sum256(c.Raw)
			if hex.EncodeToString(sum[:]) == want {
				ca = c
			} else {
				inter.AddCert(c)
			}
		}
		if ca == nil {
			return fmt.Errorf("the broker's certificate is not signed by the pinned CA %s (the broker did not present that CA; check --ca-sha256 against GET /certificateAuthorities)", want)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		name := cs.ServerName
		if name == "" {
			name = host
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			DNSName:       name,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			if _, ok := errors.AsType[x509.HostnameError](err); ok {
				return fmt.Errorf("the broker's certificate is signed by the pinned CA %s but is not valid for %q (start the broker with --tls-host %s): %w", want, name, name, err)
			}
			return fmt.Errorf("the broker's certificate is not signed by the pinned CA %s: %w", want, err)
		}
		return nil
	}
}

// EnrollRequest is the body of POST /enroll. Only a CSR leaves the device.
type EnrollRequest struct {
	CoreName string `json:"coreName"`
	Token    string `json:"token"`
	CsrPem   string `json:"csrPem"`
}

// EnrollResponse is the answer of POST /enroll (DESIGN.md, exact shape).
type EnrollResponse struct {
	ThingName string `json:"thingName"`
	// CertificatePem is the device certificate for the CSR's key.
	CertificatePem string `json:"certificatePem"`
	// CaCertificatePem is the CA that issued CertificatePem.
	CaCertificatePem string `json:"caCertificatePem"`
	// ServerCaCertificatePem verifies the broker's TLS (HTTPS and MQTT).
	ServerCaCertificatePem string `json:"serverCaCertificatePem"`
	// InstallerConfig is the Greengrass installer config YAML text.
	InstallerConfig string `json:"installerConfig"`
	MQTTEndpoint    string `json:"mqttEndpoint"` // host:port
	BrokerURL       string `json:"brokerUrl"`
	Mode            string `json:"mode"` // local | aws
}

// Enroll spends a one-time enrollment token to have the CSR's key
// certified for a core (POST /enroll). A bad, used or expired token is an
// *APIError with status 401 and the broker's message.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (EnrollResponse, error) {
	var resp EnrollResponse
	if err := c.do(ctx, http.MethodPost, "/enroll", req, &resp, false); err != nil {
		return EnrollResponse{}, err
	}
	return resp, nil
}

// Health checks that the broker is up (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, false)
}

// Do calls the API with the bearer token: path is relative to the base URL
// and may carry a query ("/coreTasks?count=10"); a non-nil body is sent as
// JSON; on a 2xx answer a non-nil out receives the decoded JSON body (or
// the raw bytes when out is an io.Writer). A 4xx/5xx answer is an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.do(ctx, method, path, body, out, true)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any, auth bool) error {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	target := c.base + path
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if auth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%s %s: %w", method, path, ctxErr)
		}
		return fmt.Errorf("cannot reach the broker at %s: %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp.StatusCode, lr)
	}
	switch o := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, lr)
		return nil
	case io.Writer:
		if _, err := io.Copy(o, lr); err != nil {
			return fmt.Errorf("%s %s: read response: %w", method, path, err)
		}
		return nil
	}
	if err := json.NewDecoder(lr).Decode(out); err != nil {
		return fmt.Errorf("%s %s: the broker's answer is not the expected JSON (is %s a ggfleet broker?): %w", method, path, c.base, err)
	}
	return nil
}

func apiError(status int, body io.Reader) error {
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(b, &m) == nil {
		msg = m.Message
	}
	if msg == "" {
		msg = strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &APIError{Status: status, Message: msg}
}

// unwrapURLError drops *url.Error's "Post URL:" prefix, which the caller's
// message already says.
func unwrapURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
