// Package identity gives the agent its device identity: a private key
// generated on the device (only a CSR leaves it), a certificate obtained
// from the broker with a one-time enrollment token (POST /enroll), and the
// TLS configuration the MQTT session uses. Enrollment is safe to re-run: an
// enrolled state directory is returned as it is, without contacting the
// broker or spending a token, and an interrupted enrollment is retried
// cleanly because identity.json, the record that says "enrolled", is
// written last.
//
// Imported by agent/cli (enroll, status), agent/daemon (run) and the
// installer. It never imports broker code.
package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// ErrNotEnrolled is wrapped by Load when the state directory holds no identity.
var ErrNotEnrolled = errors.New("not enrolled")

// Modes of the broker, as POST /enroll reports them.
const (
	ModeLocal = "local"
	ModeAWS   = "aws"
)

// Identity is an enrolled device, as recorded in identity.json.
type Identity struct {
	Version int `json:"version"`
	// ThingName is the core's thing name (= the core name, the certificate's CN).
	ThingName string `json:"thingName"`
	// BrokerURL is the broker URL the device enrolled through.
	BrokerURL string `json:"brokerUrl"`
	// MQTTEndpoint is the host:port of the MQTT broker to connect to.
	MQTTEndpoint string `json:"mqttEndpoint"`
	// Mode is the broker's provider: "local" or "aws".
	Mode string `json:"mode"`
	// CASHA256 is the hex SHA-256 of server-ca.pem's certificate, the CA
	// that verifies the broker (what --ca-sha256 pins).
	CASHA256 string `json:"caSha256"`
	// EnrolledAt is when the enrollment finished.
	EnrolledAt time.Time `json:"enrolledAt"`

	// AlreadyEnrolled is set by Enroll when it found this identity in the
	// state directory and did not contact the broker.
	AlreadyEnrolled bool `json:"-"`

	dir  *statedir.Dir
	cert *x509.Certificate
}

// EnrollOptions configures Enroll.
type EnrollOptions struct {
	BrokerURL string // http:// or https:// root of the broker's API
	Core      string // the core name the token was made for
	Token     string // the one-time enrollment token; never logged
	// CASHA256 pins the broker's CA (hex SHA-256 of its certificate's DER).
	CASHA256 string
	// KeyAlgorithm is certs.ECP256 (default) or certs.RSA2048.
	KeyAlgorithm string
	Dir          *statedir.Dir
	Logger       *slog.Logger // default: discard
	// HTTPClient and UserAgent are passed to the API client (optional).
	HTTPClient *http.Client
	UserAgent  string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// Validate reports every problem with the options' broker URL, core name,
// token, CA pin and key algorithm at once, so a command line can be checked
// before anything is created. It does not look at Dir.
func (o EnrollOptions) Validate() error {
	var probs []string
	if o.BrokerURL == "" {
		probs = append(probs, "--broker is required")
	} else if _, err := normalizeURL(o.BrokerURL); err != nil {
		probs = append(probs, err.Error())
	}
	if !nameRE.MatchString(o.Core) {
		probs = append(probs, fmt.Sprintf("--core %q is not a valid core name: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", o.Core))
	}
	if strings.TrimSpace(o.Token) == "" {
		probs = append(probs, "--token is required: make one with POST /cores/{name}/enrollmentTokens on the broker")
	}
	if o.CASHA256 != "" {
		if _, err := apiclient.ParseSHA256(o.CASHA256); err != nil {
			probs = append(probs, "--ca-sha256: "+err.Error())
		}
	}
	if err := certs.CheckAlgorithm(o.KeyAlgorithm); err != nil {
		probs = append(probs, "--key-algorithm: "+err.Error())
	}
	if len(probs) > 0 {
		return errors.New(strings.Join(probs, "; "))
	}
	return nil
}

// normalizeURL makes URLs that differ only by a trailing slash or the
// case of scheme and host compare equal.
func normalizeURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--broker %q is not a valid URL: use http://HOST:PORT or https://HOST:PORT", s)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	return strings.TrimSuffix(u.String(), "/"), nil
}

// Enroll gives the device its identity. If the state directory already
// holds an identity for the same core and broker it is returned at once
// (AlreadyEnrolled set) without contacting the broker, so no token is
// spent. Otherwise the key is generated on the device (or the key of an
// interrupted enrollment is reused), written first, and certified by the
// broker; the certificate is checked against the key and the issuing CA
// before anything else is written, and identity.json is written last. A
// refused token leaves no identity.json behind.
func Enroll(ctx context.Context, opts EnrollOptions) (Identity, error) {
	if err := opts.Validate(); err != nil {
		return Identity{}, err
	}
	if opts.Dir == nil {
		return Identity{}, errors.New("identity: Enroll needs a state directory")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log = log.With("core", opts.Core)
	brokerURL, _ := normalizeURL(opts.BrokerURL)
	dir := opts.Dir

	existing, err := Load(dir)
	switch {
	case err == nil:
		if existing.ThingName != opts.Core {
			return Identity{}, fmt.Errorf("the state directory %s already holds the identity of core %q: to enroll core %q use another --state-dir, or remove %s to replace it", dir.Path(), existing.ThingName, opts.Core, dir.File(statedir.IdentityFile))
		}
		if existing.BrokerURL != brokerURL {
			return Identity{}, fmt.Errorf("the state directory %s already holds core %q's identity from the broker %s: to enroll with %s use another --state-dir, or remove %s to replace it", dir.Path(), existing.ThingName, existing.BrokerURL, brokerURL, dir.File(statedir.IdentityFile))
		}
		if opts.CASHA256 != "" {
			pin, _ := apiclient.ParseSHA256(opts.CASHA256)
			if hex.EncodeToString(pin) != existing.CASHA256 {
				log.Warn("already enrolled; the given --ca-sha256 differs from the enrolled broker CA", "ca_sha256", existing.CASHA256)
			}
		}
		log.Info("already enrolled; nothing to do", "thing", existing.ThingName, "broker", existing.BrokerURL)
		existing.AlreadyEnrolled = true
		return existing, nil
	case errors.Is(err, ErrNotEnrolled):
	case errors.Is(err, statedir.ErrCorrupt):
		log.Warn("the identity in the state directory is unreadable; enrolling again", "err", err)
	default:
		return Identity{}, err
	}

	key, err := deviceKey(dir, opts.KeyAlgorithm, log)
	if err != nil {
		return Identity{}, err
	}
	csr, err := certs.NewCSR(key, opts.Core)
	if err != nil {
		return Identity{}, err
	}
	client, err := apiclient.New(apiclient.Config{
		BaseURL: brokerURL, CASHA256: opts.CASHA256, HTTPClient: opts.HTTPClient, UserAgent: opts.UserAgent,
	})
	if err != nil {
		return Identity{}, err
	}
	log.Info("enrolling", "broker", brokerURL, "key_algorithm", certs.Algorithm(key.Public()))
	resp, err := client.Enroll(ctx, apiclient.EnrollRequest{CoreName: opts.Core, Token: opts.Token, CsrPem: csr})
	if err != nil {
		return Identity{}, fmt.Errorf("enroll core %q: %w", opts.Core, err)
	}
	cert, serverCA, err := check(resp, key, opts.Core)
	if err != nil {
		return Identity{}, fmt.Errorf("the broker's enrollment answer for core %q is not usable (nothing was saved but the key; re-run with a new token): %w", opts.Core, err)
	}

	files := []struct {
		name string
		data string
	}{
		{statedir.CertFile, resp.CertificatePem},
		{statedir.CAFile, resp.CaCertificatePem},
		{statedir.ServerCAFile, resp.ServerCaCertificatePem},
		{statedir.InstallerConfigFile, resp.InstallerConfig},
	}
	for _, f := range files {
		if err := dir.WriteFile(f.name, []byte(f.data), statedir.PublicMode); err != nil {
			return Identity{}, fmt.Errorf("save the enrollment of core %q: %w", opts.Core, err)
		}
	}
	sum := sha256.Sum256(serverCA.Raw)
	id := Identity{
		Version:      1,
		ThingName:    resp.ThingName,
		BrokerURL:    brokerURL,
		MQTTEndpoint: resp.MQTTEndpoint,
		Mode:         resp.Mode,
		CASHA256:     hex.EncodeToString(sum[:]),
		EnrolledAt:   now().UTC().Truncate(time.Second),
		dir:          dir,
		cert:         cert,
	}
	if err := dir.WriteJSON(statedir.IdentityFile, id); err != nil {
		return Identity{}, fmt.Errorf("save the enrollment of core %q: %w", opts.Core, err)
	}
	log.Info("enrolled", "thing", id.ThingName, "mode", id.Mode, "mqtt_endpoint", id.MQTTEndpoint, "not_after", cert.NotAfter)
	return id, nil
}

// deviceKey returns the key of an earlier, interrupted enrollment when it
// is readable and of the wanted algorithm, else a new key that it saves
// (0600) before it is used, so a crash never loses a key the broker has
// certified.
func deviceKey(dir *statedir.Dir, alg string, log *slog.Logger) (crypto.Signer, error) {
	want := alg
	if want == "" {
		want = certs.ECP256
	}
	b, err := dir.ReadFile(statedir.KeyFile)
	switch {
	case err == nil:
		key, perr := certs.ParseKey(string(b))
		if perr == nil && certs.Algorithm(key.Public()) == want {
			log.Info("reusing the device key of an earlier enrollment")
			return key, nil
		}
		if perr != nil {
			log.Warn("the existing device key is unreadable; making a new one", "err", perr)
		} else {
			log.Info("the existing device key is not " + want + "; making a new one")
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	key, err := certs.GenerateKey(want)
	if err != nil {
		return nil, err
	}
	text, err := certs.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := dir.WriteFile(statedir.KeyFile, []byte(text), statedir.SecretMode); err != nil {
		return nil, fmt.Errorf("save the device key: %w", err)
	}
	return key, nil
}

// check verifies an enrollment answer: the certificate is for our key and
// our core and chains to the CA that the broker says issued it, the server
// CA and endpoint are usable.
func check(resp apiclient.EnrollResponse, key crypto.Signer, core string) (cert, serverCA *x509.Certificate, err error) {
	if resp.ThingName != core {
		return nil, nil, fmt.Errorf("it is for thing %q, not core %q", resp.ThingName, core)
	}
	cert, err = certs.ParseCertificate(resp.CertificatePem)
	if err != nil {
		return nil, nil, fmt.Errorf("certificatePem: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, errors.New("the certificate is not for this device's key")
	}
	if cert.Subject.CommonName != core {
		return nil, nil, fmt.Errorf("the certificate's common name is %q, not %q", cert.Subject.CommonName, core)
	}
	roots, err := pool(resp.CaCertificatePem)
	if err != nil {
		return nil, nil, fmt.Errorf("caCertificatePem: %w", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("the certificate does not chain to caCertificatePem: %w", err)
	}
	serverCA, err = certs.ParseCertificate(resp.ServerCaCertificatePem)
	if err != nil {
		return nil, nil, fmt.Errorf("serverCaCertificatePem: %w", err)
	}
	if _, _, err := net.SplitHostPort(resp.MQTTEndpoint); err != nil {
		return nil, nil, fmt.Errorf("mqttEndpoint %q is not host:port", resp.MQTTEndpoint)
	}
	if resp.Mode != ModeLocal && resp.Mode != ModeAWS {
		return nil, nil, fmt.Errorf("mode %q is neither %s nor %s", resp.Mode, ModeLocal, ModeAWS)
	}
	return cert, serverCA, nil
}

// pool reads every certificate of a PEM text into a pool.
func pool(pemText string) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	rest := []byte(pemText)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		p.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no CERTIFICATE PEM block found")
	}
	return p, nil
}

// Load reads the identity of an enrolled state directory. When the device
// is not enrolled the error wraps ErrNotEnrolled and says how to enroll; a
// damaged identity.json gives an error wrapping statedir.ErrCorrupt.
func Load(dir *statedir.Dir) (Identity, error) {
	var id Identity
	if err := dir.ReadJSON(statedir.IdentityFile, &id); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Identity{}, fmt.Errorf("%w: run ggagent enroll --broker URL --core NAME --token TOKEN --state-dir %s", ErrNotEnrolled, dir.Path())
		}
		return Identity{}, err
	}
	if id.ThingName == "" || id.MQTTEndpoint == "" {
		return Identity{}, fmt.Errorf("%w: %s lacks thingName or mqttEndpoint; to recover, re-run ggagent enroll (with a new token) or remove the file", statedir.ErrCorrupt, dir.File(statedir.IdentityFile))
	}
	b, err := dir.ReadFile(statedir.CertFile)
	if err != nil {
		return Identity{}, fmt.Errorf("the device certificate of enrolled core %q is missing: %w; remove %s and enroll again with a new token", id.ThingName, err, dir.File(statedir.IdentityFile))
	}
	cert, err := certs.ParseCertificate(string(b))
	if err != nil {
		return Identity{}, fmt.Errorf("the device certificate %s is unreadable: %w; remove %s and enroll again with a new token", dir.File(statedir.CertFile), err, dir.File(statedir.IdentityFile))
	}
	id.dir = dir
	id.cert = cert
	return id, nil
}

// ClientID is the MQTT client id: the thing name, or <thing>-ggagent in
// aws mode so the agent never takes over the nucleus's session.
func (id Identity) ClientID() string {
	if id.Mode == ModeAWS {
		return id.ThingName + "-ggagent"
	}
	return id.ThingName
}

// CertificateNotAfter is when the device certificate expires (zero if the
// identity was not loaded from a state directory).
func (id Identity) CertificateNotAfter() time.Time {
	if id.cert == nil {
		return time.Time{}
	}
	return id.cert.NotAfter
}

// Certificate is the parsed device certificate (nil if the identity was not
// loaded from a state directory).
func (id Identity) Certificate() *x509.Certificate { return id.cert }

// TLSConfig is the mutual-TLS configuration of the MQTT session: the
// device certificate and key as the client certificate, server-ca.pem as
// the only trusted root, and the endpoint's host as the server name. The
// files are read on each call, so a renewed certificate is picked up.
func (id Identity) TLSConfig() (*tls.Config, error) {
	if id.dir == nil {
		return nil, errors.New("identity: TLSConfig needs an identity from Load or Enroll")
	}
	certPEM, err := id.dir.ReadFile(statedir.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := id.dir.ReadFile(statedir.KeyFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("device certificate and key in %s do not form a pair: %w; remove %s and enroll again", id.dir.Path(), err, id.dir.File(statedir.IdentityFile))
	}
	caPEM, err := id.dir.ReadFile(statedir.ServerCAFile)
	if err != nil {
		return nil, err
	}
	roots, err := pool(string(caPEM))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id.dir.File(statedir.ServerCAFile), err)
	}
	host, _, err := net.SplitHostPort(id.MQTTEndpoint)
	if err != nil {
		return nil, fmt.Errorf("mqttEndpoint %q in %s is not host:port", id.MQTTEndpoint, id.dir.File(statedir.IdentityFile))
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
		ServerName:   host,
	}, nil
}
