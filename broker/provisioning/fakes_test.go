package provisioning

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// memStore is an in-memory Store.
type memStore struct {
	mu   sync.Mutex
	docs map[string][]byte
	info map[string]TemplateInfo
	// reads counts GetProvisioningTemplate calls.
	reads int
}

func newMemStore() *memStore {
	return &memStore{docs: map[string][]byte{}, info: map[string]TemplateInfo{}}
}

func (m *memStore) PutProvisioningTemplate(_ context.Context, name string, doc []byte, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inf, exists := m.info[name]
	if exists {
		inf.UpdatedAt = now
	} else {
		inf = TemplateInfo{Name: name, CreatedAt: now}
	}
	m.info[name] = inf
	m.docs[name] = slices.Clone(doc)
	return !exists, nil
}

func (m *memStore) CreateProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (bool, error) {
	m.mu.Lock()
	_, exists := m.docs[name]
	m.mu.Unlock()
	if exists {
		return false, nil
	}
	return m.PutProvisioningTemplate(ctx, name, doc, now)
}

func (m *memStore) GetProvisioningTemplate(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	d, ok := m.docs[name]
	if !ok {
		return nil, errkind.New(errkind.NotFound, "template %q not found", name)
	}
	return slices.Clone(d), nil
}

func (m *memStore) ListProvisioningTemplates(context.Context) ([]TemplateInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []TemplateInfo
	for _, i := range m.info {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

func (m *memStore) DeleteProvisioningTemplate(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.docs[name]; !ok {
		return errkind.New(errkind.NotFound, "template %q not found", name)
	}
	delete(m.docs, name)
	delete(m.info, name)
	return nil
}

// fakeProvider is an in-memory provider.Provider of things, certificates,
// policies and groups, with the optional delete extensions.
type fakeProvider struct {
	mu       sync.Mutex
	things   map[string]*provider.Thing
	certs    map[string]provider.Certificate
	policies map[string]string
	attached map[string][]string // cert id → policies
	groups   map[string]bool
	// failAttachPolicy makes AttachPolicy fail, to test undo.
	failAttachPolicy bool
	// describes counts DescribeThing calls, policyReads GetPolicy calls.
	describes, policyReads int
}

func newFakeProvider() *fakeProvider {
	return &fakeProvider{things: map[string]*provider.Thing{}, certs: map[string]provider.Certificate{},
		policies: map[string]string{}, attached: map[string][]string{}, groups: map[string]bool{}}
}

func (f *fakeProvider) Mode() string { return "fake" }

func (f *fakeProvider) DescribeThing(_ context.Context, name string) (provider.Thing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.describes++
	t, ok := f.things[name]
	if !ok {
		return provider.Thing{}, errkind.New(errkind.NotFound, "thing %q not found", name)
	}
	out := *t
	out.Principals = slices.Clone(t.Principals)
	out.Groups = slices.Clone(t.Groups)
	var pols []string
	for _, c := range t.Principals {
		pols = append(pols, f.attached[c]...)
	}
	out.Policies = sortedUnique(pols)
	return out, nil
}

func (f *fakeProvider) CreateThing(_ context.Context, name, thingType string, attrs map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.things[name]; ok {
		return errkind.New(errkind.Conflict, "thing %q exists", name)
	}
	f.things[name] = &provider.Thing{Name: name, ThingType: thingType, Attributes: attrs, CreatedAt: time.Now()}
	return nil
}

func (f *fakeProvider) DeleteThing(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.things[name]
	if !ok {
		return nil
	}
	for _, c := range t.Principals {
		delete(f.certs, c)
		delete(f.attached, c)
	}
	delete(f.things, name)
	return nil
}

func (f *fakeProvider) RegisterCertificate(_ context.Context, certPEM, caPEM, status string) (string, error) {
	c, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "bad certificate")
	}
	id := certs.ID(c)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.certs[id]; !ok {
		caID := ""
		if caPEM != "" {
			ca, err := certs.ParseCertificate(caPEM)
			if err != nil {
				return "", errkind.Wrap(errkind.Invalid, err, "bad CA certificate")
			}
			caID = certs.ID(ca)
		}
		f.certs[id] = provider.Certificate{ID: id, PEM: certPEM, CAID: caID, Status: status, CreatedAt: time.Now()}
	}
	return id, nil
}

func (f *fakeProvider) AttachThingPrincipal(_ context.Context, thing, certID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.things[thing]
	if !ok {
		return errkind.New(errkind.NotFound, "thing %q not found", thing)
	}
	if _, ok := f.certs[certID]; !ok {
		return errkind.New(errkind.NotFound, "certificate %q not found", certID)
	}
	if !slices.Contains(t.Principals, certID) {
		t.Principals = append(t.Principals, certID)
		sort.Strings(t.Principals)
	}
	return nil
}

func (f *fakeProvider) DescribeCertificate(_ context.Context, certID string) (provider.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.certs[certID]
	if !ok {
		return provider.Certificate{}, errkind.New(errkind.NotFound, "certificate %q not found", certID)
	}
	return c, nil
}

func (f *fakeProvider) DeleteCertificate(_ context.Context, certID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.certs, certID)
	delete(f.attached, certID)
	return nil
}

func (f *fakeProvider) GetPolicy(_ context.Context, name string) (provider.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policyReads++
	d, ok := f.policies[name]
	if !ok {
		return provider.Policy{}, errkind.New(errkind.NotFound, "policy %q not found", name)
	}
	return provider.Policy{Name: name, Document: d}, nil
}

func (f *fakeProvider) PutPolicy(_ context.Context, name, document string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, exists := f.policies[name]
	f.policies[name] = document
	return !exists, nil
}

func (f *fakeProvider) DeletePolicy(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.policies, name)
	return nil
}

func (f *fakeProvider) AttachPolicy(_ context.Context, policy, certID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAttachPolicy {
		return errkind.New(errkind.Unavailable, "attach policy: injected failure")
	}
	if _, ok := f.policies[policy]; !ok {
		return errkind.New(errkind.NotFound, "policy %q not found", policy)
	}
	if !slices.Contains(f.attached[certID], policy) {
		f.attached[certID] = append(f.attached[certID], policy)
	}
	return nil
}

func (f *fakeProvider) CreateThingGroup(_ context.Context, name, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[name] = true
	return nil
}

func (f *fakeProvider) AddThingToGroup(_ context.Context, thing, group string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.things[thing]
	if !ok || !f.groups[group] {
		return errkind.New(errkind.NotFound, "thing or group not found")
	}
	if !slices.Contains(t.Groups, group) {
		t.Groups = append(t.Groups, group)
		sort.Strings(t.Groups)
	}
	return nil
}

func (f *fakeProvider) RemoveThingFromGroup(context.Context, string, string) error { return nil }
func (f *fakeProvider) ListThingsInGroup(context.Context, string) ([]string, error) {
	return nil, nil
}
func (f *fakeProvider) GetCoreDevice(_ context.Context, name string) (provider.CoreDevice, error) {
	return provider.CoreDevice{}, errkind.New(errkind.NotFound, "core %q not registered", name)
}
func (f *fakeProvider) DeleteCoreDevice(context.Context, string) error { return nil }
func (f *fakeProvider) AssociateClientDevices(context.Context, string, []string) (map[string]string, error) {
	return nil, nil
}
func (f *fakeProvider) DisassociateClientDevices(context.Context, string, []string) (map[string]string, error) {
	return nil, nil
}
func (f *fakeProvider) ListClientDevices(context.Context, string) ([]provider.Association, error) {
	return nil, nil
}
func (f *fakeProvider) PutArtifact(context.Context, string, string, []byte) (string, error) {
	return "local", nil
}
func (f *fakeProvider) GetArtifact(_ context.Context, key string) ([]byte, string, error) {
	return nil, "", errkind.New(errkind.NotFound, "artifact %q not found", key)
}

// counts returns how many things, certificates and policies exist.
func (f *fakeProvider) counts() (things, certificates, policies int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.things), len(f.certs), len(f.policies)
}

// fakeIssuer is a real CA made with crypto/x509 for the test.
type fakeIssuer struct {
	id         string
	cert       *x509.Certificate
	certPEM    string
	key        crypto.Signer
	defaultAlg string
	issued     int
}

func newFakeIssuer(t testing.TB) *fakeIssuer {
	t.Helper()
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeIssuer{id: certs.ID(c), cert: c, certPEM: certs.EncodeCertificate(der), key: key, defaultAlg: certs.ECP256}
}

func (i *fakeIssuer) checkCA(caID string) error {
	if caID != "" && caID != i.id {
		return errkind.New(errkind.Invalid, "unknown CA %q", caID)
	}
	return nil
}

func (i *fakeIssuer) Issue(_ context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (string, string, error) {
	if err := i.checkCA(caID); err != nil {
		return "", "", err
	}
	i.issued++
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.cert, pub, i.key)
	if err != nil {
		return "", "", err
	}
	return certs.EncodeCertificate(der), i.certPEM, nil
}

func (i *fakeIssuer) DefaultKeyAlgorithm(_ context.Context, caID string) (string, error) {
	if err := i.checkCA(caID); err != nil {
		return "", err
	}
	return i.defaultAlg, nil
}
