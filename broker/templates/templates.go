// Package templates manages component templates (CDF spec §2.1): named,
// versioned lists of Greengrass components with optional job configuration
// and deployment policies, which deployments apply to cores. Every change
// is a new version; old versions stay readable so a deployment can name one.
package templates

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Store persists template versions. The wire type cdf.Template is the
// stored shape.
type Store interface {
	// CreateTemplate stores version 1 of a new template; errkind.Conflict
	// if a template of that name exists.
	CreateTemplate(ctx context.Context, t cdf.Template) error
	// AddTemplateVersion stores t as version latest+1, keeping the
	// original createdAt, and returns what it stored; errkind.NotFound if
	// the template does not exist.
	AddTemplateVersion(ctx context.Context, t cdf.Template) (cdf.Template, error)
	// GetTemplate returns one version, or the latest when version is 0;
	// errkind.NotFound if missing.
	GetTemplate(ctx context.Context, name string, version int) (cdf.Template, error)
	// ListTemplates returns up to count latest versions by name after the
	// cursor, and whether more exist. Components may be left out.
	ListTemplates(ctx context.Context, count int, after string) ([]cdf.Template, bool, error)
	// ListTemplateVersions returns up to count versions of a template in
	// numeric order after version `after`, and whether more exist.
	ListTemplateVersions(ctx context.Context, name string, count, after int) ([]cdf.Template, bool, error)
	// DeleteTemplate removes every version; deleting a missing template
	// is not an error.
	DeleteTemplate(ctx context.Context, name string) error
}

// ComponentChecker confirms a component version exists in the cloud's
// component catalogue (the aws provider). Its error message names the
// component.
type ComponentChecker interface {
	CheckComponent(ctx context.Context, key, version string) error
}

// Config holds the service's dependencies.
type Config struct {
	Store Store
	// Checker is nil in local mode, where components are checked for form only.
	Checker ComponentChecker
	Logger  *slog.Logger
	// Now returns the current time; nil means time.Now (tests set it).
	Now func() time.Time
}

// Service is the component template service.
type Service struct {
	store   Store
	checker ComponentChecker
	log     *slog.Logger
	now     func() time.Time
}

// New returns the template service.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, checker: cfg.Checker, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

var (
	// NameRE is the template name rule: the name becomes part of the thing
	// group cdf_ggv2_deploymentForTemplate_<name>_<version> (DESIGN.md Names).
	NameRE       = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,90}$`)
	componentKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	componentVer = regexp.MustCompile(`^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$`)
)

// CheckName validates a template name.
func CheckName(name string) error {
	if name == "" {
		return errkind.New(errkind.Invalid, "name is required: give the template a name")
	}
	if !NameRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "template name %q is not valid: use 1 to 90 characters from a-z, A-Z, 0-9, _ and -", name)
	}
	return nil
}

// Validate checks a template request for form: name, at least one
// component, each with a well-formed key and version, no key twice, a
// jobConfig and deploymentPolicies of the shapes Greengrass accepts
// (ParseJobConfig, ParseDeploymentPolicies) when given.
func Validate(t cdf.EditableTemplate) error {
	if err := CheckName(t.Name); err != nil {
		return err
	}
	if len(t.Components) == 0 {
		return errkind.New(errkind.Invalid, "components is required: list at least one component as {\"key\": ..., \"version\": ...}")
	}
	seen := make(map[string]bool, len(t.Components))
	for i, c := range t.Components {
		switch {
		case c.Key == "":
			return errkind.New(errkind.Invalid, "components[%d].key is required", i)
		case !componentKey.MatchString(c.Key):
			return errkind.New(errkind.Invalid, "components[%d].key %q is not a valid component name: use up to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit", i, c.Key)
		case c.Version == "":
			return errkind.New(errkind.Invalid, "components[%d].version is required for component %s: give a version string such as \"1.0.0\"", i, c.Key)
		case !componentVer.MatchString(c.Version):
			return errkind.New(errkind.Invalid, "components[%d].version %q of component %s is not a valid version: use major.minor.patch, such as \"2.4.0\"", i, c.Version, c.Key)
		case seen[c.Key]:
			return errkind.New(errkind.Invalid, "component %s is listed twice: list each component once", c.Key)
		}
		seen[c.Key] = true
		if c.ConfigurationUpdate != nil && c.ConfigurationUpdate.Merge != "" && !json.Valid([]byte(c.ConfigurationUpdate.Merge)) {
			return errkind.New(errkind.Invalid, "components[%d].configurationUpdate.merge of component %s must be a string holding serialised JSON", i, c.Key)
		}
	}
	if _, err := ParseJobConfig("jobConfig", t.JobConfig); err != nil {
		return err
	}
	if _, err := ParseDeploymentPolicies(t.DeploymentPolicies); err != nil {
		return err
	}
	return nil
}

// checkComponents asks the catalogue about each component (aws mode).
func (s *Service) checkComponents(ctx context.Context, cs []cdf.Component) error {
	if s.checker == nil {
		return nil
	}
	for _, c := range cs {
		if err := s.checker.CheckComponent(ctx, c.Key, c.Version); err != nil {
			if errkind.KindOf(err) != errkind.Other {
				return err
			}
			return fmt.Errorf("check component %s:%s: %w", c.Key, c.Version, err)
		}
	}
	return nil
}

// normalize sorts components by key (CDF returns them in storage order) and
// drops JSON nulls of the optional documents.
func normalize(t cdf.EditableTemplate) cdf.EditableTemplate {
	cs := append([]cdf.Component(nil), t.Components...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Key < cs[j].Key })
	t.Components = cs
	if string(t.JobConfig) == "null" {
		t.JobConfig = nil
	}
	if string(t.DeploymentPolicies) == "null" {
		t.DeploymentPolicies = nil
	}
	return t
}

// Create stores version 1 of a new template and returns it.
func (s *Service) Create(ctx context.Context, in cdf.EditableTemplate) (cdf.Template, error) {
	if err := Validate(in); err != nil {
		return cdf.Template{}, err
	}
	if err := s.checkComponents(ctx, in.Components); err != nil {
		return cdf.Template{}, err
	}
	in = normalize(in)
	t := cdf.Template{
		Name: in.Name, Version: 1, Components: in.Components,
		JobConfig: in.JobConfig, DeploymentPolicies: in.DeploymentPolicies,
		CreatedAt: cdf.At(s.now()),
	}
	if err := s.store.CreateTemplate(ctx, t); err != nil {
		if errkind.Is(err, errkind.Conflict) {
			return cdf.Template{}, errkind.Wrap(errkind.Conflict, err, "template %s already exists: use PUT /templates/%s to add a version", in.Name, in.Name)
		}
		return cdf.Template{}, fmt.Errorf("create template %q: %w", in.Name, err)
	}
	s.log.Info("template created", "template", t.Name, "version", 1)
	return t, nil
}

// Update stores the request as a new version of an existing template (a
// full replace: omitted jobConfig/deploymentPolicies are cleared) and
// returns it. The name in the path wins over the body's name.
func (s *Service) Update(ctx context.Context, name string, in cdf.EditableTemplate) (cdf.Template, error) {
	in.Name = name
	if err := Validate(in); err != nil {
		return cdf.Template{}, err
	}
	if _, err := s.store.GetTemplate(ctx, name, 0); err != nil {
		return cdf.Template{}, s.notFound(err, name)
	}
	if err := s.checkComponents(ctx, in.Components); err != nil {
		return cdf.Template{}, err
	}
	in = normalize(in)
	t, err := s.store.AddTemplateVersion(ctx, cdf.Template{
		Name: name, Components: in.Components,
		JobConfig: in.JobConfig, DeploymentPolicies: in.DeploymentPolicies,
		UpdatedAt: cdf.At(s.now()),
	})
	if err != nil {
		return cdf.Template{}, s.notFound(err, name)
	}
	s.log.Info("template updated", "template", name, "version", t.Version)
	return t, nil
}

// Get returns the latest version of a template.
func (s *Service) Get(ctx context.Context, name string) (cdf.Template, error) {
	t, err := s.store.GetTemplate(ctx, name, 0)
	if err != nil {
		return cdf.Template{}, s.notFound(err, name)
	}
	return t, nil
}

// GetVersion returns one version of a template; version is a number or the
// literal "current" (the latest).
func (s *Service) GetVersion(ctx context.Context, name, version string) (cdf.Template, error) {
	if version == "current" {
		return s.Get(ctx, name)
	}
	v, err := parseVersion(version)
	if err != nil {
		return cdf.Template{}, err
	}
	return s.Version(ctx, name, v)
}

// Version returns version v of a template (for deployments).
func (s *Service) Version(ctx context.Context, name string, v int) (cdf.Template, error) {
	if v < 1 {
		return cdf.Template{}, errkind.New(errkind.NotFound, "template %s version %d not found: versions start at 1", name, v)
	}
	t, err := s.store.GetTemplate(ctx, name, v)
	if errkind.Is(err, errkind.NotFound) {
		return cdf.Template{}, errkind.Wrap(errkind.NotFound, err, "template %s version %d not found", name, v)
	}
	if err != nil {
		return cdf.Template{}, fmt.Errorf("get template %q version %d: %w", name, v, err)
	}
	return t, nil
}

// Latest returns the latest version number of a template.
func (s *Service) Latest(ctx context.Context, name string) (int, error) {
	t, err := s.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	return t.Version, nil
}

// List returns up to count templates (their latest versions, without
// components) by name after the cursor, and whether more exist.
func (s *Service) List(ctx context.Context, count int, after string) ([]cdf.Template, bool, error) {
	list, more, err := s.store.ListTemplates(ctx, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("list templates: %w", err)
	}
	for i := range list {
		list[i].Components = nil
	}
	if list == nil {
		list = []cdf.Template{}
	}
	return list, more, nil
}

// ListVersions returns up to count versions of a template (with
// components) in numeric order after version `after` (0: from the first),
// and whether more exist. An unknown template has no versions.
func (s *Service) ListVersions(ctx context.Context, name string, count int, after string) ([]cdf.Template, bool, error) {
	start := 0
	if after != "" {
		v, err := parseVersion(after)
		if err != nil {
			return nil, false, errkind.New(errkind.Invalid, "exclusiveStartVersion must be a version number, got %q", after)
		}
		start = v
	}
	list, more, err := s.store.ListTemplateVersions(ctx, name, count, start)
	if err != nil {
		return nil, false, fmt.Errorf("list versions of template %q: %w", name, err)
	}
	if list == nil {
		list = []cdf.Template{}
	}
	return list, more, nil
}

// Delete removes every version of a template. Deleting a template that does
// not exist succeeds.
func (s *Service) Delete(ctx context.Context, name string) error {
	if err := s.store.DeleteTemplate(ctx, name); err != nil {
		return fmt.Errorf("delete template %q: %w", name, err)
	}
	s.log.Info("template deleted", "template", name)
	return nil
}

func (s *Service) notFound(err error, name string) error {
	if errkind.Is(err, errkind.NotFound) {
		return errkind.Wrap(errkind.NotFound, err, "template %s not found", name)
	}
	return fmt.Errorf("template %q: %w", name, err)
}

// parseVersion parses a positive version number.
func parseVersion(s string) (int, error) {
	v := 0
	if s == "" || len(s) > 9 {
		return 0, errkind.New(errkind.Invalid, "template version must be a whole number from 1 or \"current\", got %q", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, errkind.New(errkind.Invalid, "template version must be a whole number from 1 or \"current\", got %q", s)
		}
		v = v*10 + int(r-'0')
	}
	if v < 1 {
		return 0, errkind.New(errkind.Invalid, "template version must be a whole number from 1 or \"current\", got %q", s)
	}
	return v, nil
}
