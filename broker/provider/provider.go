// Package provider defines the one interface through which the broker talks
// to "the cloud": things, certificates, policies, thing groups, Greengrass
// core-device registration and client-device associations, and artifacts.
// Two implementations exist: local (embedded, no cloud account) and aws.
// Every implementation passes providertest.Run.
//
// Errors: a missing resource is errkind.NotFound, an existing one
// errkind.Conflict, bad input errkind.Invalid.
package provider

import (
	"context"
	"time"
)

// Thing is an IoT thing as the registry view shows it.
type Thing struct {
	Name       string
	Attributes map[string]string
	ThingType  string
	Groups     []string // thing groups the thing is a direct member of, sorted
	Principals []string // certificate ids attached to the thing, sorted
	Policies   []string // policies attached to any of its principals, sorted
	CreatedAt  time.Time
}

// Certificate is a device certificate registered with the provider.
type Certificate struct {
	ID        string // hex SHA-256 of the certificate's DER, as AWS IoT does
	PEM       string
	CAID      string // id of the CA that issued it, "" when registered without CA
	Status    string // ACTIVE | INACTIVE | REVOKED
	CreatedAt time.Time
}

// Policy is an IoT policy: a name and its JSON document.
type Policy struct {
	Name     string
	Document string
}

// CoreDevice is a Greengrass core device as the provider knows it.
type CoreDevice struct {
	Name         string
	Status       string // HEALTHY | UNHEALTHY
	CoreVersion  string
	Platform     string
	Architecture string
	LastStatus   time.Time
	Tags         map[string]string
}

// Association is a client device associated with a core.
type Association struct {
	ThingName    string
	AssociatedAt time.Time
}

// Provider is the cloud behind the broker. All calls are idempotent where the
// names say so, because tasks re-run steps after a crash.
type Provider interface {
	// Mode is "local" or "aws"; it is what /enroll reports to agents.
	Mode() string

	// DescribeThing returns the thing, or errkind.NotFound.
	DescribeThing(ctx context.Context, name string) (Thing, error)
	// CreateThing creates a thing; errkind.Conflict if it exists.
	CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error
	// DeleteThing detaches and deletes the thing's certificates (when no
	// other thing uses them), removes it from its groups and deletes it.
	// A missing thing is not an error.
	DeleteThing(ctx context.Context, name string) error

	// RegisterCertificate registers a certificate (optionally with the PEM of
	// its issuing CA) and returns its id. Registering the same certificate
	// again returns the same id.
	RegisterCertificate(ctx context.Context, certPEM, caPEM, status string) (string, error)
	// AttachThingPrincipal attaches a certificate to a thing (idempotent).
	AttachThingPrincipal(ctx context.Context, thing, certID string) error
	// DescribeCertificate returns a registered certificate or errkind.NotFound.
	DescribeCertificate(ctx context.Context, certID string) (Certificate, error)

	// GetPolicy returns a policy or errkind.NotFound.
	GetPolicy(ctx context.Context, name string) (Policy, error)
	// PutPolicy creates or replaces a policy; created reports which.
	PutPolicy(ctx context.Context, name, document string) (created bool, err error)
	// AttachPolicy attaches an existing policy to a certificate (idempotent);
	// errkind.NotFound if the policy does not exist.
	AttachPolicy(ctx context.Context, policy, certID string) error

	// CreateThingGroup creates a group; an existing group is not an error.
	CreateThingGroup(ctx context.Context, name, description string) error
	// AddThingToGroup and RemoveThingFromGroup are idempotent.
	AddThingToGroup(ctx context.Context, thing, group string) error
	RemoveThingFromGroup(ctx context.Context, thing, group string) error
	// ListThingsInGroup returns the direct members of a group, sorted.
	ListThingsInGroup(ctx context.Context, group string) ([]string, error)

	// GetCoreDevice returns the core's Greengrass registration, or
	// errkind.NotFound when the core is not registered (never enrolled and
	// never connected, for the local provider).
	GetCoreDevice(ctx context.Context, name string) (CoreDevice, error)
	// DeleteCoreDevice removes the Greengrass registration; missing is not an error.
	DeleteCoreDevice(ctx context.Context, name string) error
	// AssociateClientDevices associates devices with a core. The returned map
	// names the devices that could not be associated, with the reason.
	AssociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error)
	// DisassociateClientDevices is the reverse; same contract.
	DisassociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error)
	// ListClientDevices lists the devices associated with a core.
	ListClientDevices(ctx context.Context, core string) ([]Association, error)

	// PutArtifact stores bytes under key (the spec's artifact keys) and
	// returns the bucket it reports ("local" for the local provider).
	PutArtifact(ctx context.Context, key, contentType string, data []byte) (bucket string, err error)
	// GetArtifact returns the bytes and content type, or errkind.NotFound.
	GetArtifact(ctx context.Context, key string) ([]byte, string, error)
}
