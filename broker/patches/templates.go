package patches

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// Patch types (informational since §6.3: how a patch runs is decided by
// the template and the target).
const (
	TypeAgentBased = "agentbased"
	TypeAgentless  = "agentless"
)

// BlobBucket is the bucket playbookSource reports (the local artifact store).
const BlobBucket = "local"

// BlobKey is the artifact-store key of the blob with the given SHA-256.
func BlobKey(sum string) string { return "patches/blobs/" + sum }

var (
	varNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	artifactNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	sha256RE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	modeRE         = regexp.MustCompile(`^0?[0-7]{3}$|^[0-7]{4}$`)
)

func invalid(format string, a ...any) error { return errkind.New(errkind.Invalid, format, a...) }

// checkTemplateName applies CDF's name rule: non-empty, no control
// characters, at most 2048 bytes.
func checkTemplateName(what, name string) error {
	if name == "" {
		return invalid("%s is required", what)
	}
	if len(name) > 2048 {
		return invalid("%s is %d bytes long: the limit is 2048", what, len(name))
	}
	if !utf8.ValidString(name) {
		return invalid("%s must be UTF-8", what)
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return invalid("%s %q must not contain control characters", what, name)
		}
	}
	return nil
}

// CreateTemplate stores version 1 of a new template; errkind.Conflict if
// the name is taken.
func (s *Service) CreateTemplate(ctx context.Context, in TemplateInput) error {
	if err := checkTemplateName("name", in.Name); err != nil {
		return err
	}
	t := Template{Name: in.Name, Enabled: true, VersionNo: 1}
	apply(&t, in)
	if t.PatchType == "" && len(t.Steps) > 0 {
		t.PatchType = TypeAgentless
	}
	now := cdf.At(s.now())
	t.CreatedAt, t.UpdatedAt = now, now
	if err := s.prepareTemplate(ctx, &t); err != nil {
		return err
	}
	if err := s.cfg.Store.CreatePatchTemplate(ctx, t); err != nil {
		if errkind.Is(err, errkind.Conflict) {
			return errkind.Wrap(errkind.Conflict, err, "patch template %q already exists: PATCH it to make a new version", t.Name)
		}
		return fmt.Errorf("create patch template %q: %w", t.Name, err)
	}
	s.log.Info("patch template created", "template", t.Name)
	return nil
}

// UpdateTemplate stores a new version of an existing template: fields in
// the input replace the stored ones, extraVars are merged.
func (s *Service) UpdateTemplate(ctx context.Context, name string, in TemplateInput) (Template, error) {
	if in.Name != "" && in.Name != name {
		return Template{}, invalid("name %q in the body differs from %q in the path: a template cannot be renamed", in.Name, name)
	}
	if isEmptyInput(in) {
		return Template{}, invalid("the body changes nothing: give at least one of description, patchType, enabled, extraVars, playbookFileContents, playbookName, options, defaults, files, steps, varsEncoding")
	}
	cur, err := s.cfg.Store.GetPatchTemplate(ctx, name, 0)
	if err != nil {
		return Template{}, err
	}
	t := cur
	t.ExtraVars = maps.Clone(cur.ExtraVars)
	apply(&t, in)
	t.VersionNo = cur.VersionNo + 1
	t.UpdatedAt = cdf.At(s.now())
	if err := s.prepareTemplate(ctx, &t); err != nil {
		return Template{}, err
	}
	if err := s.cfg.Store.AddPatchTemplateVersion(ctx, t); err != nil {
		if errkind.Is(err, errkind.Conflict) {
			return Template{}, errkind.Wrap(errkind.Conflict, err, "patch template %q changed meanwhile: retry", name)
		}
		return Template{}, fmt.Errorf("update patch template %q: %w", name, err)
	}
	s.log.Info("patch template updated", "template", name, "versionNo", t.VersionNo)
	return t, nil
}

func isEmptyInput(in TemplateInput) bool {
	return in.Description == nil && in.PatchType == nil && in.Enabled == nil && in.PlaybookName == nil &&
		in.PlaybookFileContents == nil && in.ExtraVars == nil && in.Options == nil && in.Defaults == nil &&
		in.Files == nil && in.Steps == nil && in.VarsEncoding == nil
}

// apply copies the given fields of in onto t, merging extraVars.
func apply(t *Template, in TemplateInput) {
	if in.Description != nil {
		t.Description = *in.Description
	}
	if in.PatchType != nil {
		t.PatchType = *in.PatchType
	}
	if in.Enabled != nil {
		t.Enabled = *in.Enabled
	}
	if in.PlaybookName != nil {
		t.PlaybookName = *in.PlaybookName
	}
	if in.PlaybookFileContents != nil {
		t.PlaybookFileContents = *in.PlaybookFileContents
	}
	if in.ExtraVars != nil {
		if t.ExtraVars == nil {
			t.ExtraVars = map[string]string{}
		}
		maps.Copy(t.ExtraVars, in.ExtraVars)
	}
	if in.Options != nil {
		t.Options = in.Options
	}
	if in.Defaults != nil {
		t.Defaults = in.Defaults
	}
	if in.Files != nil {
		t.Files = in.Files
	}
	if in.Steps != nil {
		t.Steps = in.Steps
	}
	if in.VarsEncoding != nil {
		t.VarsEncoding = *in.VarsEncoding
	}
}

// prepareTemplate validates t, fills computed fields (playbook name and
// source, inline checksums) and stores the blobs of big inline files and
// the playbook, so dispatch only signs URLs.
func (s *Service) prepareTemplate(ctx context.Context, t *Template) error {
	if err := ValidateTemplate(t); err != nil {
		return err
	}
	if t.PlaybookFileContents != "" {
		data, _ := base64.StdEncoding.DecodeString(t.PlaybookFileContents)
		sum, err := s.putBlob(ctx, data)
		if err != nil {
			return err
		}
		t.PlaybookSource = &PlaybookSource{Bucket: BlobBucket, Key: BlobKey(sum)}
	} else {
		t.PlaybookSource = nil
	}
	for i := range t.Files {
		f := &t.Files[i]
		if f.Source.Inline == "" {
			continue
		}
		data, _ := base64.StdEncoding.DecodeString(f.Source.Inline)
		sum := sha256.Sum256(data)
		f.SHA256 = hex.EncodeToString(sum[:])
		if len(data) > InlineLimit {
			if _, err := s.putBlob(ctx, data); err != nil {
				return err
			}
		}
	}
	return nil
}

// putBlob stores data content-addressed and returns its hex SHA-256.
func (s *Service) putBlob(ctx context.Context, data []byte) (string, error) {
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	if s.cfg.Blobs == nil {
		return sum, nil
	}
	if _, err := s.cfg.Blobs.PutArtifact(ctx, BlobKey(sum), "application/octet-stream", data); err != nil {
		return "", fmt.Errorf("store blob %s: %w", sum, err)
	}
	return sum, nil
}

// ValidateTemplate checks a template version as it will be stored, with
// messages that say what to fix, and fills the CDF defaults
// (playbookName = name).
func ValidateTemplate(t *Template) error {
	var errs []string
	add := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if strings.TrimSpace(t.PatchType) == "" {
		add("patchType is required (agentbased or agentless)")
	}
	if t.PlaybookFileContents != "" {
		if t.PlaybookName == "" {
			t.PlaybookName = t.Name
		}
		if err := checkTemplateName("playbookName", t.PlaybookName); err != nil {
			add("%s", errkind.Message(err))
		} else if strings.ContainsAny(t.PlaybookName, "/") {
			add("playbookName %q must be a file name, without '/'", t.PlaybookName)
		}
		if _, err := base64.StdEncoding.DecodeString(t.PlaybookFileContents); err != nil {
			add("playbookFileContents must be base64 (standard alphabet, padded): %v", err)
		}
	}
	if len(t.Steps) == 0 && t.PlaybookFileContents == "" {
		add("give steps (a v2 template) or playbookFileContents (a base64 Ansible playbook)")
	}
	for k := range t.ExtraVars {
		if !varNameRE.MatchString(k) {
			add("extraVars key %q must be 1-128 letters, digits or '_' and not start with a digit", k)
		}
	}
	switch t.VarsEncoding {
	case "", "base64":
	default:
		add("varsEncoding must be base64 or absent")
	}
	if d := t.Defaults; d != nil {
		if d.Workdir != "" && !absPath(d.Workdir) {
			add("defaults.workdir %q must be an absolute path", d.Workdir)
		}
		if d.TimeoutSeconds < 0 {
			add("defaults.timeoutSeconds must not be negative")
		}
	}
	if len(t.Files) > 100 {
		add("at most 100 files, got %d", len(t.Files))
	}
	for i, f := range t.Files {
		checkFile(fmt.Sprintf("files[%d]", i), f, add)
	}
	if len(t.Steps) > 100 {
		add("at most 100 steps, got %d", len(t.Steps))
	}
	seen := map[string]bool{}
	for i, st := range t.Steps {
		at := fmt.Sprintf("steps[%d]", i)
		switch {
		case strings.TrimSpace(st.Name) == "":
			add("%s.name is required", at)
		case seen[st.Name]:
			add("%s.name %q is used by an earlier step: step names must be unique", at, st.Name)
		case len(st.Name) > 128 || strings.ContainsAny(st.Name, "/\n\r\t"):
			add("%s.name %q must be at most 128 characters without '/' or line breaks", at, st.Name)
		}
		seen[st.Name] = true
		checkStep(at, st, add)
	}
	if len(errs) > 0 {
		return invalid("patch template %q is not valid: %s", t.Name, strings.Join(errs, "; "))
	}
	return nil
}

// absPath accepts an absolute path, or one that starts with a template
// action (rendered by the agent, e.g. "{{ .Vars.install_dir }}/x").
func absPath(p string) bool { return strings.HasPrefix(p, "/") || strings.HasPrefix(p, "{{") }

func checkFile(at string, f patchmsg.FileSpec, add func(string, ...any)) {
	if f.Path == "" {
		add("%s.path is required", at)
	} else if !absPath(f.Path) {
		add("%s.path %q must be absolute", at, f.Path)
	}
	if f.Mode != "" && !modeRE.MatchString(f.Mode) {
		add("%s.mode %q must be octal, like 0644", at, f.Mode)
	}
	n := 0
	for _, v := range []string{f.Source.Inline, f.Source.URL, f.Source.Artifact} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		add("%s.source must have exactly one of inline (base64), url or artifact", at)
	}
	if f.Source.Inline != "" {
		if _, err := base64.StdEncoding.DecodeString(f.Source.Inline); err != nil {
			add("%s.source.inline must be base64 (standard alphabet, padded): %v", at, err)
		}
	}
	if f.Source.URL != "" && !strings.HasPrefix(f.Source.URL, "https://") && !strings.HasPrefix(f.Source.URL, "http://") {
		add("%s.source.url must be an http(s) URL", at)
	}
	if f.Source.Artifact != "" && !artifactNameRE.MatchString(f.Source.Artifact) {
		add("%s.source.artifact %q must be 1-128 letters, digits, '.', '_' or '-'", at, f.Source.Artifact)
	}
	if (f.Source.URL != "" || f.Source.Artifact != "") && !sha256RE.MatchString(f.SHA256) {
		add("%s.sha256 is required for url and artifact sources: 64 lower-case hex digits", at)
	}
	switch f.Transfer {
	case "", "push", "pull":
	default:
		add("%s.transfer must be push or pull", at)
	}
}

func checkStep(at string, st patchmsg.StepSpec, add func(string, ...any)) {
	if strings.TrimSpace(st.Run) == "" {
		add("%s.run is required: the shell script to run", at)
	}
	if st.Workdir != "" && !absPath(st.Workdir) {
		add("%s.workdir %q must be an absolute path", at, st.Workdir)
	}
	if st.TimeoutSeconds < 0 || st.Retries < 0 || st.RetryDelaySeconds < 0 || st.ReconnectTimeoutSeconds < 0 || st.MaxOutputBytes < 0 {
		add("%s: timeoutSeconds, retries, retryDelaySeconds, reconnectTimeoutSeconds and maxOutputBytes must not be negative", at)
	}
	for _, c := range st.ExpectExitCodes {
		if c < 0 || c > 255 {
			add("%s.expectExitCodes: %d is not an exit code (0-255)", at, c)
		}
	}
	switch st.OnInterrupt {
	case "", patchmsg.OnInterruptFail, patchmsg.OnInterruptRerun:
	default:
		add("%s.onInterrupt must be fail or rerun", at)
	}
	switch st.CaptureOutput {
	case "", "tail", "full", "none":
	default:
		add("%s.captureOutput must be tail, full or none", at)
	}
	for k := range st.Env {
		if !varNameRE.MatchString(k) {
			add("%s.env key %q must be letters, digits or '_' and not start with a digit", at, k)
		}
	}
}

// GetTemplate returns the latest version of a template, or version
// versionNo when it is not 0.
func (s *Service) GetTemplate(ctx context.Context, name string, versionNo int) (Template, error) {
	t, err := s.cfg.Store.GetPatchTemplate(ctx, name, versionNo)
	if err != nil {
		return Template{}, err
	}
	return t, nil
}

// ListTemplates returns up to count templates (latest versions) by name
// after the cursor, and whether more exist.
func (s *Service) ListTemplates(ctx context.Context, count int, after string) ([]Template, bool, error) {
	return s.cfg.Store.ListPatchTemplates(ctx, count, after)
}

// DeleteTemplate deletes a template and every version; errkind.NotFound
// if missing. Patches that name it fail at dispatch with
// TEMPLATE_NOT_FOUND.
func (s *Service) DeleteTemplate(ctx context.Context, name string) error {
	if err := s.cfg.Store.DeletePatchTemplate(ctx, name); err != nil {
		return err
	}
	s.log.Info("patch template deleted", "template", name)
	return nil
}

// PutArtifact stores an artifact a template's files name as
// source.artifact; the template must exist.
func (s *Service) PutArtifact(ctx context.Context, template, name string, data []byte) (Artifact, error) {
	if !artifactNameRE.MatchString(name) {
		return Artifact{}, invalid("artifact name %q must be 1-128 letters, digits, '.', '_' or '-'", name)
	}
	if s.cfg.Blobs == nil {
		return Artifact{}, errkind.New(errkind.Unavailable, "this broker has no artifact store")
	}
	if _, err := s.cfg.Store.GetPatchTemplate(ctx, template, 0); err != nil {
		return Artifact{}, err
	}
	sum, err := s.putBlob(ctx, data)
	if err != nil {
		return Artifact{}, err
	}
	a := Artifact{TemplateName: template, Name: name, SHA256: sum, Bytes: int64(len(data)), UpdatedAt: cdf.At(s.now())}
	if err := s.cfg.Store.PutPatchArtifact(ctx, a); err != nil {
		return Artifact{}, fmt.Errorf("record artifact %q of template %q: %w", name, template, err)
	}
	return a, nil
}

// SHA256Hex is the hex SHA-256 of data, as file specs and blob names
// carry it.
func SHA256Hex(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}
