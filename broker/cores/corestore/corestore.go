// Package corestore is the storage contract of core records: the types the
// cores service and the database edge share. It is a leaf package so the
// database edge compiles without the task and provisioning machinery.
package corestore

import (
	"context"
	"time"
)

// Default template values of a new core record (spec §3).
const (
	NoTemplate         = "None"
	NoDeploymentStatus = "None"
)

// Record is a stored core. The desired/reported/deployment fields belong to
// the deployments feature; core tasks only create them with their defaults.
type Record struct {
	Name                    string
	DesiredName             string
	DesiredVersion          int
	ReportedName            string
	ReportedVersion         int
	DeploymentStatus        string
	DeploymentStatusMessage string
	CreatedAt               time.Time
	UpdatedAt               time.Time
}

// Artifact kinds of a core.
const (
	ArtifactCerts  = "certs"
	ArtifactConfig = "config"
)

// ArtifactRecord is where a generated file of a core was stored.
type ArtifactRecord struct {
	Core      string
	Kind      string // ArtifactCerts | ArtifactConfig
	Bucket    string
	Key       string
	CreatedAt time.Time
}

// Filter selects cores in ListCores (spec §2.3 precedence: FailedOnly, then
// TemplateVersion, then TemplateName). TemplateVersion without TemplateName
// matches nothing.
type Filter struct {
	TemplateName    string
	TemplateVersion *int
	FailedOnly      bool
}

// Store persists core records and their artifact records.
type Store interface {
	// EnsureCores inserts a record with the default template for each name
	// that has none; existing records are left untouched (their template
	// state survives a re-submitted task).
	EnsureCores(ctx context.Context, names []string, now time.Time) error
	// GetCore returns a core or errkind.NotFound.
	GetCore(ctx context.Context, name string) (Record, error)
	// ListCores returns up to count cores in name order after the cursor, and whether more exist.
	ListCores(ctx context.Context, f Filter, count int, after string) ([]Record, bool, error)
	// PutArtifact records (or replaces) an artifact of a core.
	PutArtifact(ctx context.Context, a ArtifactRecord) error
	// ListArtifacts returns a core's artifacts.
	ListArtifacts(ctx context.Context, core string) ([]ArtifactRecord, error)
	// DeleteCore removes a core and its artifact records; errkind.NotFound if missing.
	DeleteCore(ctx context.Context, name string) error
}
