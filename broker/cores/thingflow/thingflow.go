// Package thingflow is the crash-safe "provision one thing and hand over its
// certificate" sequence shared by core and client-device tasks. Task items
// may be re-run after a crash at any point, so the sequence records its
// progress (never the private key) before each side effect and, on a re-run,
// resumes its own interrupted provisioning instead of treating the thing it
// made as someone else's. Batch works a whole Create batch in one
// transaction where the stores allow it (batch.go).
package thingflow

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Provisioner is the part of the provisioning service tasks use.
type Provisioner interface {
	// Prepare makes the key and certificate when the template asks the
	// broker to (nil otherwise), with no side effects.
	Prepare(ctx context.Context, req provisioning.Request) (*provisioning.Planned, error)
	// Provision applies the template; idempotent for the same PlannedCertificate.
	Provision(ctx context.Context, req provisioning.Request) (provisioning.Result, error)
}

// Failure is an outcome the user should see as the item's statusMessage.
// Any other error a step returns is transient: the batch is retried.
type Failure struct{ Msg string }

func (f *Failure) Error() string { return f.Msg }

// Failf returns a *Failure with a formatted message.
func Failf(format string, args ...any) error { return &Failure{Msg: fmt.Sprintf(format, args...)} }

// AsFailure returns the item failure in err's chain, if any.
func AsFailure(err error) (*Failure, bool) {
	var f *Failure
	ok := errors.As(err, &f)
	return f, ok
}

// Transient reports whether err is trouble that a retry may cure (a
// database or dependency that cannot serve now, or a cancelled context),
// rather than an outcome to report on the item.
func Transient(err error) bool {
	return errkind.Is(err, errkind.Unavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Progress is an item's resume state, stored as the task item's Progress.
// It never holds a private key.
type Progress struct {
	// CertificatePem is the certificate Prepare planned, saved before Provision.
	CertificatePem string `json:"certificatePem,omitempty"`
	// Started is set (and saved) just before Provision is first called.
	Started bool `json:"started,omitempty"`
	// Provisioned is set once Provision succeeded and certs.zip is stored.
	Provisioned bool `json:"provisioned,omitempty"`
	// Certs is where certs.zip was stored, once it was.
	Certs *cdf.Artifact `json:"certs,omitempty"`
	// Config is where installerConfig.yml was stored (core tasks), once it was.
	Config *cdf.Artifact `json:"config,omitempty"`
	// Deleting is set before a delete item's first side effect, so a re-run
	// after a crash does not report the records it already removed as missing.
	Deleting bool `json:"deleting,omitempty"`
}

// LoadProgress decodes an item's Progress ("" or null gives the zero value).
func LoadProgress(raw json.RawMessage) (Progress, error) {
	var p Progress
	if len(bytes.TrimSpace(raw)) == 0 {
		return p, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("decode item progress: %w", err)
	}
	return p, nil
}

// Saver persists the progress (and the item) before a side effect.
type Saver func(ctx context.Context, p Progress) error

// DecodeItem reads a task item's input into in and its task's request (when
// it has one) into req. When either cannot be read it fails the item, naming
// what the input is (for example "core"), and returns false.
func DecodeItem(t tasks.Task, it *tasks.Item, what string, in, req any) bool {
	if err := json.Unmarshal(it.Input, in); err != nil {
		it.Status, it.StatusMessage = cdf.StatusFailure, "the stored "+what+" request cannot be read: "+err.Error()
		return false
	}
	if len(t.Request) > 0 {
		if err := json.Unmarshal(t.Request, req); err != nil {
			it.Status, it.StatusMessage = cdf.StatusFailure, "the stored task cannot be read: "+err.Error()
			return false
		}
	}
	return true
}

// ItemProgress loads a task item's progress and returns the Saver that
// stores progress as the item's Progress and then saves the item with save
// (the tasks.Processor's save).
func ItemProgress(it *tasks.Item, save func(context.Context) error) (Progress, Saver, error) {
	prog, err := LoadProgress(it.Progress)
	if err != nil {
		return Progress{}, nil, err
	}
	saver := func(ctx context.Context, p Progress) error {
		if err := Stage(it, p); err != nil {
			return err
		}
		return save(ctx)
	}
	return prog, saver, nil
}

// Stage stores p as the item's Progress without saving the item: the
// runner's save of the finished item persists it. Use it for progress a
// re-run after a crash could do without (it would redo an idempotent step),
// to spare the database a write per item.
func Stage(it *tasks.Item, p Progress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode progress: %w", err)
	}
	it.Progress = b
	return nil
}

// Flow runs the sequence for one thing.
type Flow struct {
	Provider    provider.Provider
	Provisioner Provisioner
	Now         func() time.Time
}

// Outcome is what Run did.
type Outcome struct {
	// AlreadyExists: the thing existed and was not ours to resume; nothing was done.
	AlreadyExists bool
	// Certs locates certs.zip when one was stored.
	Certs *cdf.Artifact
	// Result is the provisioning result (zero when resumed past Provision).
	Result provisioning.Result
}

// CertsKey is the artifact key of a thing's certs.zip.
func CertsKey(name string) string { return "greengrass2/artifacts/" + name + "/" + name + "/certs.zip" }

// ConfigKey is the artifact key of a core's installerConfig.yml.
func ConfigKey(name string) string {
	return "greengrass2/artifacts/" + name + "/" + name + "/installerConfig.yml"
}

func (f *Flow) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Run provisions the thing name (unless it already exists and is not an
// interrupted provisioning of this item) and stores its certs.zip. prog is
// updated and saved as steps complete. Errors are *Failure for outcomes to
// report, anything else is transient.
//
// Order, for templates that let the broker make the certificate: Prepare →
// certs.zip (certificate, key and issuing CA) → save Progress{certificatePem,
// started} → Provision with the planned certificate → certs.zip again only
// if Provision's result differs from the plan (it does not for the broker's
// own CA, so one file write per core is saved) → save Progress{provisioned}.
// A crash anywhere re-runs into the same certificate: never a second thing
// or certificate, and certs.zip always matches the registered certificate.
func (f *Flow) Run(ctx context.Context, name string, req provisioning.Request, prog *Progress, save Saver) (Outcome, error) {
	th, err := f.Provider.DescribeThing(ctx, name)
	exists := err == nil
	switch {
	case exists:
		if !prog.ours(th) {
			return Outcome{AlreadyExists: true}, nil
		}
		if prog.Provisioned {
			return Outcome{Certs: prog.Certs}, nil
		}
	case errkind.Is(err, errkind.NotFound):
		if prog.Provisioned {
			// The thing we made is gone (deleted meanwhile): start over.
			*prog = Progress{}
		}
		// Started but no thing yet: the crash came before Provision made it;
		// resume below with the same planned certificate.
	default:
		return Outcome{}, f.fail(err, "Failed provisioning: %v", err)
	}
	req.ThingAbsent = !exists // Provision need not look again

	if !prog.Started {
		planned, err := f.Provisioner.Prepare(ctx, req)
		if err != nil {
			return Outcome{}, f.fail(err, "Failed provisioning: %v", err)
		}
		if planned != nil {
			a, err := f.putCerts(ctx, name, planned.CertificatePem, planned.PrivateKeyPem, planned.CaCertificatePem)
			if err != nil {
				return Outcome{}, err
			}
			stored := &storedCerts{cert: planned.CertificatePem, key: planned.PrivateKeyPem, ca: planned.CaCertificatePem, at: a}
			prog.CertificatePem = planned.CertificatePem
			prog.Started = true
			if err := save(ctx, *prog); err != nil {
				return Outcome{}, err
			}
			req.PlannedCertificate = planned
			return f.provision(ctx, name, req, prog, save, planned.PrivateKeyPem, planned.CaCertificatePem, stored)
		}
		prog.Started = true
		if err := save(ctx, *prog); err != nil {
			return Outcome{}, err
		}
		return f.provision(ctx, name, req, prog, save, "", "", nil)
	}

	// Resuming an interrupted provisioning.
	if prog.CertificatePem != "" {
		saved, _ := f.savedCerts(ctx, name)
		key, ca := saved["certs/private.key"], saved["certs/root.ca.pem"]
		req.PlannedCertificate = &provisioning.Planned{CertificatePem: prog.CertificatePem, PrivateKeyPem: key, CaCertificatePem: ca}
		return f.provision(ctx, name, req, prog, save, key, ca, nil)
	}
	if exists && len(th.Principals) > 0 {
		// A template without a broker-made certificate: Provision finished
		// before the crash; adopt what it registered.
		c, err := f.Provider.DescribeCertificate(ctx, th.Principals[0])
		if err != nil {
			return Outcome{}, f.fail(err, "Failed provisioning: %v", err)
		}
		return f.finish(ctx, name, provisioning.Result{ThingName: name, CertificateID: c.ID, CertificatePem: c.PEM}, prog, save, "", "", nil)
	}
	return f.provision(ctx, name, req, prog, save, "", "", nil)
}

// storedCerts is the certs.zip this run already stored (durably) and where.
type storedCerts struct {
	cert, key, ca string
	at            cdf.Artifact
}

// provision calls Provision; key and ca are the broker-made key and the
// issuing CA known from the plan ("" when none), stored the certs.zip this
// run already wrote (nil when none).
func (f *Flow) provision(ctx context.Context, name string, req provisioning.Request, prog *Progress, save Saver, key, ca string, stored *storedCerts) (Outcome, error) {
	res, err := f.Provisioner.Provision(ctx, req)
	if err != nil {
		return Outcome{}, f.fail(err, "Failed provisioning: %v", err)
	}
	return f.finish(ctx, name, res, prog, save, key, ca, stored)
}

// finish stores certs.zip with everything known (certificate, the broker-made
// key, the issuing CA), unless stored already holds exactly that, and
// records the item as provisioned.
func (f *Flow) finish(ctx context.Context, name string, res provisioning.Result, prog *Progress, save Saver, key, ca string, stored *storedCerts) (Outcome, error) {
	if res.PrivateKeyPem != "" {
		key = res.PrivateKeyPem
	}
	if res.CaCertificatePem != "" {
		ca = res.CaCertificatePem
	}
	certPEM := res.CertificatePem
	if certPEM == "" {
		certPEM = prog.CertificatePem
	}
	switch {
	case certPEM == "":
	case stored != nil && stored.cert == certPEM && stored.key == key && stored.ca == ca:
		a := stored.at
		prog.Certs = &a
	default:
		a, err := f.putCerts(ctx, name, certPEM, key, ca)
		if err != nil {
			return Outcome{}, err
		}
		prog.Certs = &a
	}
	prog.Provisioned = true
	if err := save(ctx, *prog); err != nil {
		return Outcome{}, err
	}
	return Outcome{Certs: prog.Certs, Result: res}, nil
}

// ours reports whether an existing thing is this item's own interrupted
// provisioning: provisioning was started, and the thing holds the planned
// certificate, or no certificate yet (the crash came between creating the
// thing and attaching it), or the template makes no broker certificate.
func (p Progress) ours(th provider.Thing) bool {
	if !p.Started && !p.Provisioned {
		return false
	}
	if p.CertificatePem == "" || len(th.Principals) == 0 {
		return true
	}
	c, err := certs.ParseCertificate(p.CertificatePem)
	if err != nil {
		return false
	}
	return slices.Contains(th.Principals, certs.ID(c))
}

// savedCerts reads back the certs.zip stored before a crash (the private
// key is never kept anywhere else); nil when there is none.
func (f *Flow) savedCerts(ctx context.Context, name string) (map[string]string, error) {
	data, _, err := f.Provider.GetArtifact(ctx, CertsKey(name))
	if err != nil {
		return nil, err
	}
	return ReadZip(data)
}

func (f *Flow) putCerts(ctx context.Context, name, certPEM, keyPEM, caPEM string) (cdf.Artifact, error) {
	data, err := CertsZip(certPEM, keyPEM, caPEM)
	if err != nil {
		return cdf.Artifact{}, Failf("Failed uploading certs: %v", err)
	}
	key := CertsKey(name)
	bucket, err := f.Provider.PutArtifact(ctx, key, "application/zip", data)
	if err != nil {
		return cdf.Artifact{}, f.fail(err, "Failed uploading certs: %v", err)
	}
	return cdf.Artifact{Bucket: bucket, Key: key, CreatedAt: cdf.At(f.now())}, nil
}

// fail returns err itself when it is transient, else a *Failure with the message.
func (f *Flow) fail(err error, format string, args ...any) error {
	if Transient(err) {
		return err
	}
	return Failf(format, args...)
}

// CertsZip builds certs.zip: the directory entry certs/, certs/cert.pem,
// certs/private.key (only when the broker made the key) and
// certs/root.ca.pem (the issuing CA, when known). The entries are stored,
// not deflated: they are a few kilobytes of PEM, and compressing them cost
// about 5 % of the broker's CPU per core in bulk provisioning.
func CertsZip(certPEM, keyPEM, caPEM string) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if _, err := zw.Create("certs/"); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, body string }{
		{"certs/cert.pem", certPEM},
		{"certs/private.key", keyPEM},
		{"certs/root.ca.pem", caPEM},
	} {
		if f.body == "" {
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(w, f.body); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadZip returns the files of a zip archive by name (directories omitted).
func ReadZip(data []byte) (map[string]string, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("read zip: %w", err)
	}
	out := map[string]string{}
	for _, zf := range zr.File {
		if zf.FileInfo().IsDir() {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("read zip entry %s: %w", zf.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("read zip entry %s: %w", zf.Name, err)
		}
		out[zf.Name] = string(b)
	}
	return out, nil
}

// ToRequest converts a core's or device's CDF parameters into a provisioning request.
func ToRequest(template string, params map[string]string, p *cdf.CdfProvisioningParameters) provisioning.Request {
	req := provisioning.Request{Template: template, Parameters: params}
	if p != nil {
		req.CDF = &provisioning.CDFParameters{
			CaID:              p.CaID,
			CertificatePem:    p.CertificatePem,
			CertificateStatus: p.CertificateStatus,
			Csr:               p.Csr,
		}
		if ci := p.CertInfo; ci != nil {
			req.CDF.CertInfo = &provisioning.CertInfo{
				CommonName: ci.CommonName, Organization: ci.Organization, OrganizationalUnit: ci.OrganizationalUnit,
				Locality: ci.Locality, StateName: ci.StateName, Country: ci.Country, EmailAddress: ci.EmailAddress,
				DaysExpiry: ci.DaysExpiry, KeyAlgorithm: ci.KeyAlgorithm,
			}
		}
	}
	return req
}
