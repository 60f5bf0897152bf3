// Package local is the embedded provider: the thing, certificate, policy,
// thing-group and core-device registry lives in the broker's database (through
// Store) and artifacts live in a directory, so ggfleet runs without a cloud
// account. It implements provider.Provider and passes providertest.Run.
package local

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Store is the registry's persistence, implemented by the SQL store. Every
// method is one atomic operation. Missing rows are errkind.NotFound and
// duplicates errkind.Conflict, as the method comments say.
type Store interface {
	// CreateThing inserts a thing (Name, ThingType, Attributes, CreatedAt);
	// errkind.Conflict if it exists.
	CreateThing(ctx context.Context, t provider.Thing) error
	// GetThing returns a thing with Groups, Principals and Policies filled
	// (sorted), or errkind.NotFound.
	GetThing(ctx context.Context, name string) (provider.Thing, error)
	// DeleteThing removes, in one transaction, the thing's group memberships,
	// its principals, the certificates no other thing uses (with their policy
	// attachments), the client-device associations where it is the device,
	// and the thing. A missing thing is not an error.
	DeleteThing(ctx context.Context, name string) error

	// PutCertificate inserts a certificate; an existing id is left as it is.
	PutCertificate(ctx context.Context, c provider.Certificate) error
	// GetCertificate returns a certificate or errkind.NotFound.
	GetCertificate(ctx context.Context, id string) (provider.Certificate, error)
	// AttachThingPrincipal links a certificate to a thing (idempotent);
	// errkind.NotFound if either is missing.
	AttachThingPrincipal(ctx context.Context, thing, certID string) error
	// DeleteCertificate deletes a certificate that no thing uses, with its
	// policy attachments; errkind.Conflict while a thing uses it. A missing
	// certificate is not an error.
	DeleteCertificate(ctx context.Context, id string) error
	// DeletePolicy deletes a policy attached to no certificate;
	// errkind.Conflict while attached. A missing policy is not an error.
	DeletePolicy(ctx context.Context, name string) error

	// GetPolicy returns a policy or errkind.NotFound.
	GetPolicy(ctx context.Context, name string) (provider.Policy, error)
	// PutPolicy creates or replaces a policy and reports whether it created it.
	PutPolicy(ctx context.Context, p provider.Policy, now time.Time) (created bool, err error)
	// AttachPolicy links a policy to a certificate (idempotent);
	// errkind.NotFound if either is missing.
	AttachPolicy(ctx context.Context, policy, certID string) error

	// CreateThingGroup inserts a group; an existing group is left as it is.
	CreateThingGroup(ctx context.Context, name, description string, now time.Time) error
	// AddThingToGroup is idempotent; errkind.NotFound if either is missing.
	AddThingToGroup(ctx context.Context, thing, group string) error
	// RemoveThingFromGroup is idempotent; missing thing or group is not an error.
	RemoveThingFromGroup(ctx context.Context, thing, group string) error
	// ListThingsInGroup returns the members, sorted; errkind.NotFound if the
	// group does not exist.
	ListThingsInGroup(ctx context.Context, group string) ([]string, error)
	// ListThingGroupsForThing returns the groups of a thing, sorted (empty
	// when the thing does not exist).
	ListThingGroupsForThing(ctx context.Context, thing string) ([]string, error)

	// MarkCoreRegistered records a core registration (idempotent: an existing
	// registration keeps its status).
	MarkCoreRegistered(ctx context.Context, name string, at time.Time) error
	// GetCoreDevice returns a registration or errkind.NotFound.
	GetCoreDevice(ctx context.Context, name string) (provider.CoreDevice, error)
	// UpdateCoreStatus stores the reported status fields, registering the
	// core if needed.
	UpdateCoreStatus(ctx context.Context, c provider.CoreDevice) error
	// DeleteCoreDevice removes the registration and the core's client-device
	// associations; missing is not an error.
	DeleteCoreDevice(ctx context.Context, name string) error

	// AssociateClientDevices links to core, in one transaction, each of
	// devices that is a thing (idempotent: an existing association keeps
	// its timestamp), and returns the others, left alone.
	AssociateClientDevices(ctx context.Context, core string, devices []string, at time.Time) (missing []string, err error)
	// DisassociateClientDevices removes the associations of devices with
	// core in one transaction (idempotent).
	DisassociateClientDevices(ctx context.Context, core string, devices []string) error
	// ListClientDevices returns the associations of a core.
	ListClientDevices(ctx context.Context, core string) ([]provider.Association, error)
}

// Config configures a local provider.
type Config struct {
	Store Store
	// Artifacts keeps the artifacts. When nil, a Store that keeps them
	// itself (DatabaseArtifacts: sqlstore) is used, else files under
	// ArtifactsDir.
	Artifacts ArtifactStore
	// ArtifactsDir holds the artifacts as files when the Store does not
	// keep them (created, 0700, when missing). When it does, an existing
	// ArtifactsDir is still read: artifacts that earlier versions wrote
	// there are served until replaced.
	ArtifactsDir string
	Logger       *slog.Logger
	Now          func() time.Time // defaults to time.Now; tests pin it
}

// Provider is the embedded provider. It is safe for concurrent use.
type Provider struct {
	store     Store
	artifacts ArtifactStore
	log       *slog.Logger
	now       func() time.Time

	mu    sync.Mutex
	caIDs map[string]string // CA certificate PEM → its id: every registration names one of a few CAs
}

// maxCAIDs bounds the caIDs cache.
const maxCAIDs = 64

var _ provider.Provider = (*Provider)(nil)

// New opens the artifacts directory and returns the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("local provider: a Store is required")
	}
	if da, ok := cfg.Store.(DatabaseArtifacts); cfg.Artifacts == nil && cfg.ArtifactsDir == "" && (!ok || !da.KeepsArtifacts()) {
		return nil, fmt.Errorf("local provider: an artifacts directory or store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	arts := cfg.Artifacts
	if da, ok := cfg.Store.(DatabaseArtifacts); ok && arts == nil && da.KeepsArtifacts() {
		arts = da
		if fi, err := os.Stat(cfg.ArtifactsDir); cfg.ArtifactsDir != "" && err == nil && fi.IsDir() {
			legacy, err := NewDirArtifacts(cfg.ArtifactsDir)
			if err != nil {
				return nil, err
			}
			arts = &fallbackArtifacts{ArtifactStore: da, legacy: legacy}
		}
	}
	if arts == nil {
		d, err := NewDirArtifacts(cfg.ArtifactsDir)
		if err != nil {
			return nil, err
		}
		arts = d
	}
	return &Provider{store: cfg.Store, artifacts: arts, log: cfg.Logger, now: cfg.Now}, nil
}

// Close releases the artifact store (the directory handle).
func (p *Provider) Close() error { return p.artifacts.Close() }

// Mode reports "local": agents enrolled here use the embedded MQTT broker.
func (p *Provider) Mode() string { return "local" }

// DescribeThing returns the thing with its groups, principals and policies.
func (p *Provider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	if err := provider.CheckName("thing name", name); err != nil {
		return provider.Thing{}, err
	}
	t, err := p.store.GetThing(ctx, name)
	if err != nil {
		return provider.Thing{}, fmt.Errorf("describe thing %q: %w", name, err)
	}
	if t.Attributes == nil {
		t.Attributes = map[string]string{}
	}
	for _, s := range [][]string{t.Groups, t.Principals, t.Policies} {
		sort.Strings(s)
	}
	return t, nil
}

// CreateThing creates a thing; errkind.Conflict if it exists.
func (p *Provider) CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error {
	if err := provider.CheckName("thing name", name); err != nil {
		return err
	}
	if thingType != "" {
		if err := provider.CheckName("thing type", thingType); err != nil {
			return err
		}
	}
	attrs := make(map[string]string, len(attributes))
	for k, v := range attributes {
		attrs[k] = v
	}
	t := provider.Thing{Name: name, ThingType: thingType, Attributes: attrs, CreatedAt: p.now()}
	if err := p.store.CreateThing(ctx, t); err != nil {
		return fmt.Errorf("create thing %q: %w", name, err)
	}
	return nil
}

// DeleteThing deletes the thing, its memberships and principals, the
// certificates no other thing uses and its client-device associations.
func (p *Provider) DeleteThing(ctx context.Context, name string) error {
	if err := provider.CheckName("thing name", name); err != nil {
		return err
	}
	if err := p.store.DeleteThing(ctx, name); err != nil {
		return fmt.Errorf("delete thing %q: %w", name, err)
	}
	return nil
}

// RegisterCertificate registers a certificate and returns its id (hex SHA-256
// of the DER). caPEM, when given, names the issuing CA by its id. An empty
// status means ACTIVE. Registering the same certificate again returns the
// same id and keeps the stored status.
func (p *Provider) RegisterCertificate(ctx context.Context, certPEM, caPEM, status string) (string, error) {
	status, err := provider.CertificateStatus(status)
	if err != nil {
		return "", err
	}
	cert, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "the certificate is not a valid PEM certificate")
	}
	caID, err := p.caID(caPEM)
	if err != nil {
		return "", err
	}
	id := certs.ID(cert)
	c := provider.Certificate{ID: id, PEM: certs.EncodeCertificate(cert.Raw), CAID: caID, Status: status, CreatedAt: p.now()}
	if err := p.store.PutCertificate(ctx, c); err != nil {
		return "", fmt.Errorf("register certificate %s: %w", id, err)
	}
	return id, nil
}

// caID is the id of a CA certificate ("" for none), read once per PEM.
func (p *Provider) caID(caPEM string) (string, error) {
	if strings.TrimSpace(caPEM) == "" {
		return "", nil
	}
	p.mu.Lock()
	id, ok := p.caIDs[caPEM]
	p.mu.Unlock()
	if ok {
		return id, nil
	}
	ca, err := certs.ParseCertificate(caPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "the CA certificate is not a valid PEM certificate")
	}
	id = certs.ID(ca)
	p.mu.Lock()
	if p.caIDs == nil || len(p.caIDs) >= maxCAIDs {
		p.caIDs = map[string]string{}
	}
	p.caIDs[caPEM] = id
	p.mu.Unlock()
	return id, nil
}

// AttachThingPrincipal attaches a certificate to a thing (idempotent).
func (p *Provider) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	if err := provider.CheckName("thing name", thing); err != nil {
		return err
	}
	if err := p.store.AttachThingPrincipal(ctx, thing, certID); err != nil {
		return fmt.Errorf("attach certificate %s to thing %q: %w", certID, thing, err)
	}
	return nil
}

// DescribeCertificate returns a registered certificate or errkind.NotFound.
func (p *Provider) DescribeCertificate(ctx context.Context, certID string) (provider.Certificate, error) {
	c, err := p.store.GetCertificate(ctx, certID)
	if err != nil {
		return provider.Certificate{}, fmt.Errorf("describe certificate %s: %w", certID, err)
	}
	return c, nil
}

// CertificateActive reports whether a certificate may connect: it is
// registered and ACTIVE. A certificate deleted with its thing is not.
func (p *Provider) CertificateActive(ctx context.Context, certID string) (bool, error) {
	c, err := p.store.GetCertificate(ctx, certID)
	if errkind.Is(err, errkind.NotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check certificate %s: %w", certID, err)
	}
	return c.Status == provider.CertificateActive, nil
}

// DeleteCertificate deletes a certificate no thing uses (as AWS IoT, it must
// be detached first). Provisioning uses it to undo a failed run.
func (p *Provider) DeleteCertificate(ctx context.Context, certID string) error {
	if err := p.store.DeleteCertificate(ctx, certID); err != nil {
		return fmt.Errorf("delete certificate %s: %w", certID, err)
	}
	return nil
}

// DeletePolicy deletes a policy attached to no certificate. Provisioning
// uses it to undo a failed run.
func (p *Provider) DeletePolicy(ctx context.Context, name string) error {
	if err := p.store.DeletePolicy(ctx, name); err != nil {
		return fmt.Errorf("delete policy %q: %w", name, err)
	}
	return nil
}

// GetPolicy returns a policy or errkind.NotFound.
func (p *Provider) GetPolicy(ctx context.Context, name string) (provider.Policy, error) {
	if err := provider.CheckPolicyName(name); err != nil {
		return provider.Policy{}, err
	}
	pol, err := p.store.GetPolicy(ctx, name)
	if err != nil {
		return provider.Policy{}, fmt.Errorf("get policy %q: %w", name, err)
	}
	return pol, nil
}

// PutPolicy creates or replaces a policy; the document must be a JSON object.
func (p *Provider) PutPolicy(ctx context.Context, name, document string) (bool, error) {
	if err := provider.CheckPolicyName(name); err != nil {
		return false, err
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(document), &obj); err != nil || obj == nil {
		return false, errkind.New(errkind.Invalid, "the document of policy %q must be a JSON object (an AWS IoT policy document with \"Version\" and \"Statement\")", name)
	}
	created, err := p.store.PutPolicy(ctx, provider.Policy{Name: name, Document: document}, p.now())
	if err != nil {
		return false, fmt.Errorf("put policy %q: %w", name, err)
	}
	return created, nil
}

// AttachPolicy attaches an existing policy to a certificate (idempotent).
func (p *Provider) AttachPolicy(ctx context.Context, policy, certID string) error {
	if err := provider.CheckPolicyName(policy); err != nil {
		return err
	}
	if err := p.store.AttachPolicy(ctx, policy, certID); err != nil {
		return fmt.Errorf("attach policy %q to certificate %s: %w", policy, certID, err)
	}
	return nil
}

// CreateThingGroup creates a group; an existing group is not an error.
func (p *Provider) CreateThingGroup(ctx context.Context, name, description string) error {
	if err := provider.CheckName("thing group name", name); err != nil {
		return err
	}
	if err := p.store.CreateThingGroup(ctx, name, description, p.now()); err != nil {
		return fmt.Errorf("create thing group %q: %w", name, err)
	}
	return nil
}

// AddThingToGroup adds a thing to a group (idempotent).
func (p *Provider) AddThingToGroup(ctx context.Context, thing, group string) error {
	if err := provider.CheckName("thing name", thing); err != nil {
		return err
	}
	if err := provider.CheckName("thing group name", group); err != nil {
		return err
	}
	if err := p.store.AddThingToGroup(ctx, thing, group); err != nil {
		return fmt.Errorf("add thing %q to group %q: %w", thing, group, err)
	}
	return nil
}

// RemoveThingFromGroup removes a thing from a group (idempotent).
func (p *Provider) RemoveThingFromGroup(ctx context.Context, thing, group string) error {
	if err := provider.CheckName("thing name", thing); err != nil {
		return err
	}
	if err := provider.CheckName("thing group name", group); err != nil {
		return err
	}
	if err := p.store.RemoveThingFromGroup(ctx, thing, group); err != nil {
		return fmt.Errorf("remove thing %q from group %q: %w", thing, group, err)
	}
	return nil
}

// ListThingsInGroup returns the direct members of a group, sorted.
func (p *Provider) ListThingsInGroup(ctx context.Context, group string) ([]string, error) {
	if err := provider.CheckName("thing group name", group); err != nil {
		return nil, err
	}
	names, err := p.store.ListThingsInGroup(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("list things in group %q: %w", group, err)
	}
	sort.Strings(names)
	return names, nil
}

// ListThingGroupsForThing returns the groups a thing is a direct member of,
// sorted (the MQTT side uses it to find a core's deployments).
func (p *Provider) ListThingGroupsForThing(ctx context.Context, thing string) ([]string, error) {
	if err := provider.CheckName("thing name", thing); err != nil {
		return nil, err
	}
	names, err := p.store.ListThingGroupsForThing(ctx, thing)
	if err != nil {
		return nil, fmt.Errorf("list groups of thing %q: %w", thing, err)
	}
	sort.Strings(names)
	return names, nil
}

// BatchStore is implemented by stores that answer registry questions about
// many things in one query (sqlstore). The provider's batch methods ask
// per thing without it.
type BatchStore interface {
	// RegisteredCores returns which of names have a core registration.
	RegisteredCores(ctx context.Context, names []string) (map[string]bool, error)
	// MoveThingsToGroup makes every existing thing of things a member of
	// group and of no other group whose name starts with prefix, in one
	// transaction, and returns the things that do not exist;
	// errkind.NotFound if the group does not exist.
	MoveThingsToGroup(ctx context.Context, things []string, group, prefix string) (missing []string, err error)
}

// validNames returns the names that are valid provider names, and records
// in invalid the error of each one that is not.
func validNames(what string, names []string, invalid map[string]error) []string {
	var valid []string
	for _, n := range names {
		if err := provider.CheckName(what, n); err != nil {
			invalid[n] = err
			continue
		}
		valid = append(valid, n)
	}
	return valid
}

// CoreRegistrations returns, for each of names that is not a registered
// core, why: errkind.NotFound when it is not registered, else what kept it
// from being checked. A deployment batch asks this once instead of
// GetCoreDevice per core.
func (p *Provider) CoreRegistrations(ctx context.Context, names []string) (map[string]error, error) {
	out := map[string]error{}
	valid := validNames("core name", names, out)
	bs, ok := p.store.(BatchStore)
	if !ok {
		for _, n := range valid {
			if _, err := p.GetCoreDevice(ctx, n); err != nil {
				if !errkind.Is(err, errkind.NotFound) && !errkind.Is(err, errkind.Invalid) {
					return nil, err
				}
				out[n] = err
			}
		}
		return out, nil
	}
	registered, err := bs.RegisteredCores(ctx, valid)
	if err != nil {
		return nil, fmt.Errorf("look up %d core registrations: %w", len(valid), err)
	}
	for _, n := range valid {
		if !registered[n] {
			out[n] = errkind.New(errkind.NotFound, "core device %q is not registered", n)
		}
	}
	return out, nil
}

// MoveToGroup makes each thing a member of group and of no other group whose
// name starts with prefix (group must exist): RemoveThingFromGroup and
// AddThingToGroup for many things at once. It returns the error of each
// thing that could not be moved (errkind.NotFound when the thing does not
// exist, errkind.Invalid for a bad name); the error is for the whole call.
func (p *Provider) MoveToGroup(ctx context.Context, things []string, group, prefix string) (map[string]error, error) {
	if err := provider.CheckName("thing group name", group); err != nil {
		return nil, err
	}
	out := map[string]error{}
	valid := validNames("thing name", things, out)
	bs, ok := p.store.(BatchStore)
	if !ok {
		for _, n := range valid {
			groups, err := p.ListThingGroupsForThing(ctx, n)
			if err != nil {
				return nil, err
			}
			for _, g := range groups {
				if g != group && strings.HasPrefix(g, prefix) {
					if err := p.RemoveThingFromGroup(ctx, n, g); err != nil {
						return nil, err
					}
				}
			}
			if err := p.AddThingToGroup(ctx, n, group); err != nil {
				if !errkind.Is(err, errkind.NotFound) {
					return nil, err
				}
				out[n] = err
			}
		}
		return out, nil
	}
	missing, err := bs.MoveThingsToGroup(ctx, valid, group, prefix)
	if err != nil {
		return nil, fmt.Errorf("move %d things to group %q: %w", len(valid), group, err)
	}
	for _, n := range missing {
		out[n] = fmt.Errorf("add thing %q to group %q: %w", n, group, errkind.New(errkind.NotFound, "thing %q does not exist", n))
	}
	return out, nil
}

// MarkCoreRegistered records that a core obtained its identity (enrollment)
// or connected; GetCoreDevice succeeds from then on, with Status "" until the
// first health report. Idempotent.
func (p *Provider) MarkCoreRegistered(ctx context.Context, name string) error {
	if err := provider.CheckName("core name", name); err != nil {
		return err
	}
	if err := p.store.MarkCoreRegistered(ctx, name, p.now()); err != nil {
		return fmt.Errorf("register core %q: %w", name, err)
	}
	return nil
}

// UpdateCoreStatus stores a core's reported health (registering it if
// needed). A zero LastStatus means now.
func (p *Provider) UpdateCoreStatus(ctx context.Context, c provider.CoreDevice) error {
	if err := provider.CheckName("core name", c.Name); err != nil {
		return err
	}
	if c.LastStatus.IsZero() {
		c.LastStatus = p.now()
	}
	if err := p.store.UpdateCoreStatus(ctx, c); err != nil {
		return fmt.Errorf("update status of core %q: %w", c.Name, err)
	}
	return nil
}

// GetCoreDevice returns the core's registration or errkind.NotFound.
func (p *Provider) GetCoreDevice(ctx context.Context, name string) (provider.CoreDevice, error) {
	if err := provider.CheckName("core name", name); err != nil {
		return provider.CoreDevice{}, err
	}
	c, err := p.store.GetCoreDevice(ctx, name)
	if err != nil {
		return provider.CoreDevice{}, fmt.Errorf("get core device %q: %w", name, err)
	}
	return c, nil
}

// DeleteCoreDevice removes the registration and the core's associations.
func (p *Provider) DeleteCoreDevice(ctx context.Context, name string) error {
	if err := provider.CheckName("core name", name); err != nil {
		return err
	}
	if err := p.store.DeleteCoreDevice(ctx, name); err != nil {
		return fmt.Errorf("delete core device %q: %w", name, err)
	}
	return nil
}

// registeredCore returns errkind.Invalid unless the core is registered.
func (p *Provider) registeredCore(ctx context.Context, core string) error {
	if err := provider.CheckName("core name", core); err != nil {
		return err
	}
	_, err := p.store.GetCoreDevice(ctx, core)
	if errkind.Is(err, errkind.NotFound) {
		return errkind.New(errkind.Invalid, "core %q is not registered: it must enroll (ggagent enroll) or connect before client devices can be associated with it", core)
	}
	if err != nil {
		return fmt.Errorf("get core device %q: %w", core, err)
	}
	return nil
}

// AssociateClientDevices associates things with a registered core. Devices
// that are not things are returned in the failure map with the reason.
func (p *Provider) AssociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	if err := p.registeredCore(ctx, core); err != nil {
		return nil, err
	}
	valid, failed := validDevices(devices)
	if len(valid) == 0 {
		return failed, nil
	}
	missing, err := p.store.AssociateClientDevices(ctx, core, valid, p.now())
	if err != nil {
		return failed, fmt.Errorf("associate %d client devices with core %q: %w", len(valid), core, err)
	}
	for _, d := range missing {
		failed[d] = fmt.Sprintf("thing %q does not exist", d)
	}
	return failed, nil
}

// DisassociateClientDevices removes associations; a device that is not
// associated is not a failure (the call is idempotent).
func (p *Provider) DisassociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	if err := p.registeredCore(ctx, core); err != nil {
		return nil, err
	}
	valid, failed := validDevices(devices)
	if len(valid) == 0 {
		return failed, nil
	}
	if err := p.store.DisassociateClientDevices(ctx, core, valid); err != nil {
		return failed, fmt.Errorf("disassociate %d client devices from core %q: %w", len(valid), core, err)
	}
	return failed, nil
}

// validDevices splits device names into the valid ones and the failures
// of the others, with the reason.
func validDevices(devices []string) (valid []string, failed map[string]string) {
	failed = map[string]string{}
	valid = make([]string, 0, len(devices))
	for _, d := range devices {
		if err := provider.CheckName("device name", d); err != nil {
			failed[d] = errkind.Message(err)
			continue
		}
		valid = append(valid, d)
	}
	return valid, failed
}

// ListClientDevices lists the devices associated with a core, sorted by name.
// A core with no associations (or none registered) gives an empty list.
func (p *Provider) ListClientDevices(ctx context.Context, core string) ([]provider.Association, error) {
	if err := provider.CheckName("core name", core); err != nil {
		return nil, err
	}
	list, err := p.store.ListClientDevices(ctx, core)
	if err != nil {
		return nil, fmt.Errorf("list client devices of core %q: %w", core, err)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ThingName < list[j].ThingName })
	return list, nil
}
