package provisioning

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// Issuer signs device certificates with one of the broker's certificate
// authorities. caID "" names the default CA; an unknown caID is
// errkind.Invalid. (*ca.Authority implements it.)
type Issuer interface {
	// Issue certifies pub for subject for days days and returns the
	// certificate and the issuing CA's certificate, both PEM.
	Issue(ctx context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (certPEM, caPEM string, err error)
	// DefaultKeyAlgorithm is the key algorithm ("EC-P256" | "RSA-2048") the
	// CA uses for keys it generates when certInfo.keyAlgorithm is empty.
	DefaultKeyAlgorithm(ctx context.Context, caID string) (string, error)
}

// Store keeps provisioning templates: the raw document as it was put.
// sqlstore.DB implements it. Missing templates are errkind.NotFound.
type Store interface {
	// PutProvisioningTemplate creates or replaces a template; created reports which.
	PutProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (created bool, err error)
	// CreateProvisioningTemplate stores a template only if none has that
	// name; created reports whether it did.
	CreateProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (created bool, err error)
	// GetProvisioningTemplate returns the document as stored.
	GetProvisioningTemplate(ctx context.Context, name string) ([]byte, error)
	// ListProvisioningTemplates lists every template, sorted by name.
	ListProvisioningTemplates(ctx context.Context) ([]TemplateInfo, error)
	// DeleteProvisioningTemplate deletes a template.
	DeleteProvisioningTemplate(ctx context.Context, name string) error
}

// TemplateInfo describes a stored template in listings.
type TemplateInfo struct {
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time // zero until the template is first replaced
}

// Config configures a Service.
type Config struct {
	Store    Store
	Provider provider.Provider
	Issuer   Issuer
	Logger   *slog.Logger
	// Region and AccountID are what the AWS::Region and AWS::AccountId
	// pseudo parameters (and certificate ARNs) yield; defaults "us-east-1"
	// and "000000000000".
	Region, AccountID string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service stores provisioning templates and provisions things from them.
type Service struct {
	store   Store
	prov    provider.Provider
	issuer  Issuer
	log     *slog.Logger
	region  string
	account string
	now     func() time.Time

	mu     sync.Mutex
	parsed map[string]parsedTemplate // by template name: the last document parsed
}

// parsedTemplate is a template document as stored and parsed. A parsed
// document is never modified, so runs share it.
type parsedTemplate struct {
	name string
	raw  []byte
	doc  *document
}

// maxParsed bounds the parsed-template cache (brokers have a few templates).
const maxParsed = 64

// template reads and parses the request's template. A plan made by Prepare
// carries the template it was made with, so Provision neither reads nor
// parses it again; otherwise the stored document is read (a template may
// change at any time) and parsed unless it is the one parsed last time.
func (s *Service) template(ctx context.Context, req Request) ([]byte, *document, error) {
	if p := req.PlannedCertificate; p != nil && p.origin != nil && p.origin.template.name == req.Template {
		return p.origin.template.raw, p.origin.template.doc, nil
	}
	memo := batchMemoOf(ctx)
	if t, ok := memo.get(req.Template); ok {
		return t.raw, t.doc, nil
	}
	raw, err := s.store.GetProvisioningTemplate(ctx, req.Template)
	if errkind.Is(err, errkind.NotFound) {
		return nil, nil, errkind.Wrap(errkind.Invalid, err, "BadRequestError: INVALID_PROVISIONING_TEMPLATE: %s", req.Template)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read provisioning template %q: %w", req.Template, err)
	}
	s.mu.Lock()
	c, ok := s.parsed[req.Template]
	s.mu.Unlock()
	if !ok || !bytes.Equal(c.raw, raw) {
		doc, err := parseTemplate(raw)
		if err != nil {
			return nil, nil, invalid("provisioning template %q is not valid: %s", req.Template, msgOf(err))
		}
		c = parsedTemplate{name: req.Template, raw: raw, doc: doc}
		s.mu.Lock()
		if s.parsed == nil || len(s.parsed) >= maxParsed {
			s.parsed = map[string]parsedTemplate{}
		}
		s.parsed[req.Template] = c
		s.mu.Unlock()
	}
	memo.put(c)
	return c.raw, c.doc, nil
}

// WithBatchReads returns a context in which the Service reads each
// provisioning template, and looks up each policy a template names, at most
// once: a batch of things provisioned together (a core or device task's
// batch) does not read the same template and policy for each. Keep such a
// context short lived: a template changed while it lasts is not seen by it
// (a policy deleted meanwhile still fails its attachment).
func WithBatchReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, batchReadsKey{}, &batchMemo{byName: map[string]parsedTemplate{}, policies: map[string]bool{}})
}

type batchReadsKey struct{}

// batchMemoOf returns the memo of ctx's WithBatchReads (nil outside one:
// its methods then remember nothing).
func batchMemoOf(ctx context.Context) *batchMemo {
	m, _ := ctx.Value(batchReadsKey{}).(*batchMemo)
	return m
}

// batchMemo holds the templates read, and the policies found, under
// one WithBatchReads context; its things may be prepared concurrently.
type batchMemo struct {
	mu       sync.Mutex
	byName   map[string]parsedTemplate
	policies map[string]bool // names found to exist
}

// hasPolicy reports whether policy was found to exist under m.
func (m *batchMemo) hasPolicy(policy string) bool {
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policies[policy]
}

// foundPolicy remembers that policy exists.
func (m *batchMemo) foundPolicy(policy string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.policies[policy] = true
}

func (m *batchMemo) get(name string) (parsedTemplate, bool) {
	if m == nil {
		return parsedTemplate{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.byName[name]
	return t, ok
}

func (m *batchMemo) put(t parsedTemplate) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byName[t.name] = t
}

// New returns a Service.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, prov: cfg.Provider, issuer: cfg.Issuer, log: cfg.Logger,
		region: cfg.Region, account: cfg.AccountID, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if s.account == "" {
		s.account = "000000000000"
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// templateNameRE is the rule for provisioning template names.
var templateNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

func checkTemplateName(name string) error {
	if !templateNameRE.MatchString(name) {
		return invalid("provisioning template name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", name)
	}
	return nil
}

// Validate checks a template document without storing it; the error is
// errkind.Invalid with a message saying what to fix.
func Validate(doc []byte) error {
	_, err := parseTemplate(doc)
	return err
}

// Put validates and stores a template document as given; created reports
// whether the name was new.
func (s *Service) Put(ctx context.Context, name string, doc []byte) (bool, error) {
	if err := checkTemplateName(name); err != nil {
		return false, err
	}
	if err := Validate(doc); err != nil {
		return false, err
	}
	created, err := s.store.PutProvisioningTemplate(ctx, name, doc, s.now())
	if err != nil {
		return false, fmt.Errorf("store provisioning template %q: %w", name, err)
	}
	return created, nil
}

// Get returns a template's document as stored, or errkind.NotFound.
func (s *Service) Get(ctx context.Context, name string) ([]byte, error) {
	if err := checkTemplateName(name); err != nil {
		return nil, errkind.New(errkind.NotFound, "provisioning template %q not found", name)
	}
	doc, err := s.store.GetProvisioningTemplate(ctx, name)
	if errkind.Is(err, errkind.NotFound) {
		return nil, errkind.Wrap(errkind.NotFound, err, "provisioning template %q not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("read provisioning template %q: %w", name, err)
	}
	return doc, nil
}

// List returns every template's name and timestamps, sorted by name.
func (s *Service) List(ctx context.Context) ([]TemplateInfo, error) {
	list, err := s.store.ListProvisioningTemplates(ctx)
	if err != nil {
		return nil, fmt.Errorf("list provisioning templates: %w", err)
	}
	return list, nil
}

// Delete deletes a template, or returns errkind.NotFound.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := checkTemplateName(name); err != nil {
		return errkind.New(errkind.NotFound, "provisioning template %q not found", name)
	}
	err := s.store.DeleteProvisioningTemplate(ctx, name)
	if errkind.Is(err, errkind.NotFound) {
		return errkind.Wrap(errkind.NotFound, err, "provisioning template %q not found", name)
	}
	if err != nil {
		return fmt.Errorf("delete provisioning template %q: %w", name, err)
	}
	return nil
}

// SeedDefaults stores DefaultTemplates and creates DefaultPolicies, each
// only when absent, so a fresh broker can provision out of the box. Safe to
// run on every start and from several replicas.
func (s *Service) SeedDefaults(ctx context.Context) error {
	for name, doc := range DefaultTemplates() {
		created, err := s.store.CreateProvisioningTemplate(ctx, name, doc, s.now())
		if err != nil {
			return fmt.Errorf("seed provisioning template %q: %w", name, err)
		}
		if created {
			s.log.Info("seeded provisioning template", "name", name)
		}
	}
	for name, doc := range DefaultPolicies() {
		_, err := s.prov.GetPolicy(ctx, name)
		if err == nil {
			continue
		}
		if !errkind.Is(err, errkind.NotFound) {
			return fmt.Errorf("seed policy %q: %w", name, err)
		}
		if _, err := s.prov.PutPolicy(ctx, name, doc); err != nil {
			return fmt.Errorf("seed policy %q: %w", name, err)
		}
		s.log.Info("seeded policy", "name", name)
	}
	return nil
}

// msgOf is an error's user-facing message, or its text.
func msgOf(err error) string {
	if m := errkind.Message(err); m != "" {
		return m
	}
	return err.Error()
}
