// Package coretest holds in-memory fakes for testing core and client-device
// tasks without a database or a cloud: a provider, a provisioner, a task
// store and record stores. They keep state and count calls so tests can
// assert "exactly one thing, one certificate".
package coretest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/devices/devicestore"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Provider is an in-memory provider.Provider. Fail makes the named method
// return the error (set it under Mu or before use).
type Provider struct {
	Mu           sync.Mutex
	Things       map[string]*provider.Thing
	Certs        map[string]provider.Certificate
	Groups       map[string]string
	Cores        map[string]provider.CoreDevice
	Assoc        map[string]map[string]time.Time
	Artifacts    map[string][]byte
	ContentTypes map[string]string
	Fail         map[string]error
	// RefuseAssoc names devices that Associate/Disassociate report as failed.
	RefuseAssoc map[string]bool
}

var _ provider.Provider = (*Provider)(nil)

// NewProvider returns an empty Provider.
func NewProvider() *Provider {
	return &Provider{
		Things: map[string]*provider.Thing{}, Certs: map[string]provider.Certificate{}, Groups: map[string]string{},
		Cores: map[string]provider.CoreDevice{}, Assoc: map[string]map[string]time.Time{},
		Artifacts: map[string][]byte{}, ContentTypes: map[string]string{}, Fail: map[string]error{}, RefuseAssoc: map[string]bool{},
	}
}

func (p *Provider) fail(method string) error { return p.Fail[method] }

// Mode reports "local".
func (p *Provider) Mode() string { return "local" }

// DescribeThing returns a copy of the thing.
func (p *Provider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("DescribeThing"); err != nil {
		return provider.Thing{}, err
	}
	t, ok := p.Things[name]
	if !ok {
		return provider.Thing{}, errkind.New(errkind.NotFound, "thing %s not found", name)
	}
	c := *t
	c.Principals = slices.Clone(t.Principals)
	return c, nil
}

// CreateThing creates a thing.
func (p *Provider) CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("CreateThing"); err != nil {
		return err
	}
	if _, ok := p.Things[name]; ok {
		return errkind.New(errkind.Conflict, "thing %s exists", name)
	}
	p.Things[name] = &provider.Thing{Name: name, ThingType: thingType, Attributes: attributes, CreatedAt: time.Now()}
	return nil
}

// DeleteThing deletes a thing and its certificates.
func (p *Provider) DeleteThing(ctx context.Context, name string) error {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("DeleteThing"); err != nil {
		return err
	}
	if t, ok := p.Things[name]; ok {
		for _, id := range t.Principals {
			delete(p.Certs, id)
		}
	}
	delete(p.Things, name)
	return nil
}

// RegisterCertificate registers a certificate by its id.
func (p *Provider) RegisterCertificate(ctx context.Context, certPEM, caPEM, status string) (string, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("RegisterCertificate"); err != nil {
		return "", err
	}
	c, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "bad certificate")
	}
	id := certs.ID(c)
	if _, ok := p.Certs[id]; !ok {
		p.Certs[id] = provider.Certificate{ID: id, PEM: certPEM, Status: status, CreatedAt: time.Now()}
	}
	return id, nil
}

// AttachThingPrincipal attaches a certificate.
func (p *Provider) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	t, ok := p.Things[thing]
	if !ok {
		return errkind.New(errkind.NotFound, "thing %s not found", thing)
	}
	if !slices.Contains(t.Principals, certID) {
		t.Principals = append(t.Principals, certID)
		sort.Strings(t.Principals)
	}
	return nil
}

// DescribeCertificate returns a certificate.
func (p *Provider) DescribeCertificate(ctx context.Context, certID string) (provider.Certificate, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	c, ok := p.Certs[certID]
	if !ok {
		return c, errkind.New(errkind.NotFound, "certificate %s not found", certID)
	}
	return c, nil
}

// GetPolicy is not used by these tests.
func (p *Provider) GetPolicy(ctx context.Context, name string) (provider.Policy, error) {
	return provider.Policy{}, errkind.New(errkind.NotFound, "policy %s not found", name)
}

// PutPolicy is not used by these tests.
func (p *Provider) PutPolicy(ctx context.Context, name, document string) (bool, error) {
	return true, nil
}

// AttachPolicy is not used by these tests.
func (p *Provider) AttachPolicy(ctx context.Context, policy, certID string) error { return nil }

// CreateThingGroup records a group.
func (p *Provider) CreateThingGroup(ctx context.Context, name, description string) error {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("CreateThingGroup"); err != nil {
		return err
	}
	p.Groups[name] = description
	return nil
}

// AddThingToGroup is not used by these tests.
func (p *Provider) AddThingToGroup(ctx context.Context, thing, group string) error { return nil }

// RemoveThingFromGroup is not used by these tests.
func (p *Provider) RemoveThingFromGroup(ctx context.Context, thing, group string) error { return nil }

// ListThingsInGroup is not used by these tests.
func (p *Provider) ListThingsInGroup(ctx context.Context, group string) ([]string, error) {
	return nil, nil
}

// GetCoreDevice returns a registered core.
func (p *Provider) GetCoreDevice(ctx context.Context, name string) (provider.CoreDevice, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("GetCoreDevice"); err != nil {
		return provider.CoreDevice{}, err
	}
	c, ok := p.Cores[name]
	if !ok {
		return c, errkind.New(errkind.NotFound, "core device %s not registered", name)
	}
	return c, nil
}

// DeleteCoreDevice forgets a core registration and its associations.
func (p *Provider) DeleteCoreDevice(ctx context.Context, name string) error {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("DeleteCoreDevice"); err != nil {
		return err
	}
	delete(p.Cores, name)
	delete(p.Assoc, name)
	return nil
}

// AssociateClientDevices associates devices, refusing those in RefuseAssoc.
func (p *Provider) AssociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("AssociateClientDevices"); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if p.Assoc[core] == nil {
		p.Assoc[core] = map[string]time.Time{}
	}
	for _, d := range devices {
		if p.RefuseAssoc[d] {
			out[d] = "refused"
			continue
		}
		p.Assoc[core][d] = time.Now()
	}
	return out, nil
}

// DisassociateClientDevices disassociates devices, refusing those in RefuseAssoc.
func (p *Provider) DisassociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("DisassociateClientDevices"); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range devices {
		if p.RefuseAssoc[d] {
			out[d] = "refused"
			continue
		}
		delete(p.Assoc[core], d)
	}
	return out, nil
}

// ListClientDevices lists associations, sorted.
func (p *Provider) ListClientDevices(ctx context.Context, core string) ([]provider.Association, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	var out []provider.Association
	for d, at := range p.Assoc[core] {
		out = append(out, provider.Association{ThingName: d, AssociatedAt: at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ThingName < out[j].ThingName })
	return out, nil
}

// PutArtifact stores bytes.
func (p *Provider) PutArtifact(ctx context.Context, key, contentType string, data []byte) (string, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	if err := p.fail("PutArtifact"); err != nil {
		return "", err
	}
	if err := p.fail("PutArtifact:" + key[strings.LastIndex(key, "/")+1:]); err != nil {
		return "", err
	}
	p.Artifacts[key] = slices.Clone(data)
	p.ContentTypes[key] = contentType
	return "local", nil
}

// GetArtifact returns stored bytes.
func (p *Provider) GetArtifact(ctx context.Context, key string) ([]byte, string, error) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	b, ok := p.Artifacts[key]
	if !ok {
		return nil, "", errkind.New(errkind.NotFound, "artifact %s not found", key)
	}
	return slices.Clone(b), p.ContentTypes[key], nil
}

// CA is a test certificate authority.
type CA struct {
	Cert *x509.Certificate
	PEM  string
	key  any
}

// NewCA makes a self-signed CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &CA{Cert: c, PEM: certs.EncodeCertificate(der), key: key}
}

// Issue makes a key and certificate with CN = name.
func (ca *CA) Issue(name string) (certPEM, keyPEM string, err error) {
	key, err := certs.GenerateKey("")
	if err != nil {
		return "", "", err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return "", "", err
	}
	keyPEM, err = certs.EncodeKey(key)
	return certs.EncodeCertificate(der), keyPEM, err
}

// Provisioner is a fake provisioning service over a Provider. Templates:
// "broker-cert" (Prepare makes key and certificate), "no-cert" (Provision
// registers a certificate made by the CA itself, no key returned), "bad"
// (Invalid). The thing name is the ThingName parameter.
type Provisioner struct {
	P  *Provider
	CA *CA

	Mu         sync.Mutex
	Prepares   int
	Provisions int
	// FailProvision makes Provision fail with this error.
	FailProvision error
	// CrashAfterCreate makes Provision create the thing, then fail transiently once.
	CrashAfterCreate bool
}

// Prepare plans a certificate for "broker-cert" templates.
func (f *Provisioner) Prepare(ctx context.Context, req provisioning.Request) (*provisioning.Planned, error) {
	f.Mu.Lock()
	f.Prepares++
	f.Mu.Unlock()
	switch req.Template {
	case "bad":
		return nil, errkind.New(errkind.Invalid, "BadRequestError: INVALID_PROVISIONING_TEMPLATE")
	case "broker-cert":
		c, k, err := f.CA.Issue(req.Parameters["ThingName"])
		if err != nil {
			return nil, err
		}
		return &provisioning.Planned{CertificatePem: c, PrivateKeyPem: k, CaCertificatePem: f.CA.PEM}, nil
	}
	return nil, nil
}

// Provision creates the thing and registers and attaches the certificate;
// an existing thing holding the planned certificate is adopted.
func (f *Provisioner) Provision(ctx context.Context, req provisioning.Request) (provisioning.Result, error) {
	f.Mu.Lock()
	f.Provisions++
	failErr, crash := f.FailProvision, f.CrashAfterCreate
	f.CrashAfterCreate = false
	f.Mu.Unlock()
	if failErr != nil {
		return provisioning.Result{}, failErr
	}
	name := req.Parameters["ThingName"]
	if req.Template == "bad" {
		return provisioning.Result{}, errkind.New(errkind.Invalid, "BadRequestError: INVALID_PROVISIONING_TEMPLATE")
	}
	certPEM := ""
	if req.PlannedCertificate != nil {
		certPEM = req.PlannedCertificate.CertificatePem
	} else {
		c, _, err := f.CA.Issue(name)
		if err != nil {
			return provisioning.Result{}, err
		}
		certPEM = c
	}
	if err := f.P.CreateThing(ctx, name, "", nil); err != nil && !errkind.Is(err, errkind.Conflict) {
		return provisioning.Result{}, err
	}
	if crash {
		return provisioning.Result{}, errkind.New(errkind.Unavailable, "simulated crash after creating the thing")
	}
	id, err := f.P.RegisterCertificate(ctx, certPEM, f.CA.PEM, "ACTIVE")
	if err != nil {
		return provisioning.Result{}, err
	}
	if err := f.P.AttachThingPrincipal(ctx, name, id); err != nil {
		return provisioning.Result{}, err
	}
	return provisioning.Result{ThingName: name, CertificateID: id, CertificatePem: certPEM, CaCertificatePem: f.CA.PEM}, nil
}

// Tasks is an in-memory tasks.Store.
type Tasks struct {
	mu      sync.Mutex
	tasks   map[string]tasks.Task
	items   map[string][]tasks.Item
	batches map[string]map[int]bool
}

var _ tasks.Store = (*Tasks)(nil)

// NewTasks returns an empty task store.
func NewTasks() *Tasks {
	return &Tasks{tasks: map[string]tasks.Task{}, items: map[string][]tasks.Item{}, batches: map[string]map[int]bool{}}
}

// CreateTask stores a task.
func (s *Tasks) CreateTask(ctx context.Context, t tasks.Task, items []tasks.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks[t.ID] = t
	s.items[t.ID] = slices.Clone(items)
	s.batches[t.ID] = map[int]bool{}
	return nil
}

// GetTask returns a task.
func (s *Tasks) GetTask(ctx context.Context, id string) (tasks.Task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return t, errkind.New(errkind.NotFound, "task %s not found", id)
	}
	return t, nil
}

// ListTasks lists tasks of a kind in id order.
func (s *Tasks) ListTasks(ctx context.Context, kind tasks.Kind, count int, after string) ([]tasks.Task, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []tasks.Task
	for _, t := range s.tasks {
		if t.Kind == kind && t.ID > after {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > count {
		return out[:count], true, nil
	}
	return out, false, nil
}

// ListItems returns a task's items.
func (s *Tasks) ListItems(ctx context.Context, taskID string) ([]tasks.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.items[taskID]), nil
}

// ListItemStates returns a task's items without their input and progress.
func (s *Tasks) ListItemStates(ctx context.Context, taskID string) ([]tasks.Item, error) {
	items, _ := s.ListItems(ctx, taskID)
	for i := range items {
		items[i].Input, items[i].Progress = nil, nil
	}
	return items, nil
}

// ListBatchItems returns one batch's items.
func (s *Tasks) ListBatchItems(ctx context.Context, taskID string, batch int) ([]tasks.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []tasks.Item
	for _, it := range s.items[taskID] {
		if it.Batch == batch {
			out = append(out, it)
		}
	}
	return out, nil
}

// UpdateItem replaces an item.
func (s *Tasks) UpdateItem(ctx context.Context, it tasks.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, old := range s.items[it.TaskID] {
		if old.Name == it.Name {
			s.items[it.TaskID][i] = it
			return nil
		}
	}
	return errkind.New(errkind.NotFound, "item %s not found", it.Name)
}

// StartTask moves a Waiting task to InProgress.
func (s *Tasks) StartTask(ctx context.Context, id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t.Status == cdf.StatusWaiting {
		t.Status, t.UpdatedAt = cdf.StatusInProgress, now
		s.tasks[id] = t
	}
	return nil
}

// CompleteBatch counts a batch once and settles the task status.
func (s *Tasks) CompleteBatch(ctx context.Context, id string, batch int, failed bool, message string, now time.Time) (tasks.Task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if !s.batches[id][batch] {
		s.batches[id][batch] = true
		t.BatchesComplete++
		if failed {
			t.Status = cdf.StatusFailure
			if t.StatusMessage == "" {
				t.StatusMessage = message
			}
		}
		if t.BatchesComplete == t.BatchesTotal && t.Status != cdf.StatusFailure {
			t.Status = cdf.StatusSuccess
		}
		t.UpdatedAt = now
		s.tasks[id] = t
	}
	return t, nil
}

// RunAll runs every batch of a task with r, returning the first error.
func RunAll(ctx context.Context, r *tasks.Runner, s tasks.Store, id string) error {
	t, err := s.GetTask(ctx, id)
	if err != nil {
		return err
	}
	for b := 0; b < t.BatchesTotal; b++ {
		if err := r.RunBatch(ctx, tasks.BatchRef{TaskID: id, Batch: b}); err != nil {
			return err
		}
	}
	return nil
}

// CoreStore is an in-memory corestore.Store.
type CoreStore struct {
	mu    sync.Mutex
	Cores map[string]corestore.Record
	Arts  map[string]map[string]corestore.ArtifactRecord
}

var _ corestore.Store = (*CoreStore)(nil)

// NewCoreStore returns an empty core store.
func NewCoreStore() *CoreStore {
	return &CoreStore{Cores: map[string]corestore.Record{}, Arts: map[string]map[string]corestore.ArtifactRecord{}}
}

// EnsureCores inserts missing cores.
func (s *CoreStore) EnsureCores(ctx context.Context, names []string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		if _, ok := s.Cores[n]; !ok {
			s.Cores[n] = corestore.Record{Name: n, DesiredName: "None", ReportedName: "None", DeploymentStatus: "None", CreatedAt: now}
		}
	}
	return nil
}

// GetCore returns a core.
func (s *CoreStore) GetCore(ctx context.Context, name string) (corestore.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.Cores[name]
	if !ok {
		return r, errkind.New(errkind.NotFound, "core %s not found", name)
	}
	return r, nil
}

// ListCores lists all cores (filters are tested against the SQL store).
func (s *CoreStore) ListCores(ctx context.Context, f corestore.Filter, count int, after string) ([]corestore.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []corestore.Record
	for _, r := range s.Cores {
		if r.Name > after {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) > count {
		return out[:count], true, nil
	}
	return out, false, nil
}

// PutArtifact records an artifact.
func (s *CoreStore) PutArtifact(ctx context.Context, a corestore.ArtifactRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Arts[a.Core] == nil {
		s.Arts[a.Core] = map[string]corestore.ArtifactRecord{}
	}
	s.Arts[a.Core][a.Kind] = a
	return nil
}

// ListArtifacts lists a core's artifacts.
func (s *CoreStore) ListArtifacts(ctx context.Context, core string) ([]corestore.ArtifactRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []corestore.ArtifactRecord
	for _, a := range s.Arts[core] {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out, nil
}

// DeleteCore deletes a core and its artifacts.
func (s *CoreStore) DeleteCore(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.Cores[name]; !ok {
		return errkind.New(errkind.NotFound, "core %s not found", name)
	}
	delete(s.Cores, name)
	delete(s.Arts, name)
	return nil
}

// DeviceStore is an in-memory devicestore.Store; it sees the cores of Cores.
type DeviceStore struct {
	mu      sync.Mutex
	Cores   *CoreStore
	Devices map[string]devicestore.Record
}

var _ devicestore.Store = (*DeviceStore)(nil)

// NewDeviceStore returns an empty device store over cores.
func NewDeviceStore(cores *CoreStore) *DeviceStore {
	return &DeviceStore{Cores: cores, Devices: map[string]devicestore.Record{}}
}

// CoreExists looks the core up in Cores.
func (s *DeviceStore) CoreExists(ctx context.Context, core string) (bool, error) {
	_, err := s.Cores.GetCore(ctx, core)
	return err == nil, nil
}

// PutDevices creates or re-links devices.
func (s *DeviceStore) PutDevices(ctx context.Context, core string, names []string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		r, ok := s.Devices[n]
		if !ok {
			r = devicestore.Record{Name: n, CreatedAt: now}
		} else {
			r.UpdatedAt = now
		}
		r.CoreName = core
		s.Devices[n] = r
	}
	return nil
}

// GetDevice returns a device.
func (s *DeviceStore) GetDevice(ctx context.Context, name string) (devicestore.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.Devices[name]
	if !ok {
		return r, errkind.New(errkind.NotFound, "device %s not found", name)
	}
	return r, nil
}

// ListDevices lists devices in name order.
func (s *DeviceStore) ListDevices(ctx context.Context, core string, count int, after string) ([]devicestore.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []devicestore.Record
	for _, r := range s.Devices {
		if r.Name > after && (core == "" || r.CoreName == core) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) > count {
		return out[:count], true, nil
	}
	return out, false, nil
}

// RecordCerts records a certs artifact, making the record when missing.
func (s *DeviceStore) RecordCerts(ctx context.Context, core, name, bucket, key string, certsAt, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.Devices[name]
	if !ok {
		r = devicestore.Record{Name: name, CoreName: core, CreatedAt: now}
	}
	r.CertsBucket, r.CertsKey, r.CertsCreatedAt = bucket, key, certsAt
	s.Devices[name] = r
	return nil
}

// DeleteDevice deletes a device.
func (s *DeviceStore) DeleteDevice(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.Devices[name]; !ok {
		return errkind.New(errkind.NotFound, "device %s not found", name)
	}
	delete(s.Devices, name)
	return nil
}

// Events records emitted events.
type Events struct {
	mu  sync.Mutex
	Got []string // "detail-type|json"
}

// Sink is the event sink function.
func (e *Events) Sink(ctx context.Context, detailType string, detail any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Got = append(e.Got, fmt.Sprintf("%s|%+v", detailType, detail))
}

// List returns the events so far.
func (e *Events) List() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.Got)
}
