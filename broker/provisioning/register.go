package provisioning

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// ThingRegistrar is an optional provider extension (the aws provider has
// it). When the provider has it, Provision runs the CDF pre-steps itself,
// then applies the template's resources with ONE call — AWS IoT
// RegisterThing with the template body minus its CDF section — then the CDF
// post-steps (attachAdditionalPolicies). Without it (local mode) the
// broker's interpreter applies the resources call by call.
type ThingRegistrar interface {
	// RegisterThing applies templateBody (Parameters and Resources, no CDF
	// section) with params and returns the PEM of the template's
	// certificate ("" when it has none). Like AWS's RegisterThing it reuses
	// a thing, certificate or policy that already exists, so a retry after
	// a crash makes nothing twice. A template or parameters the cloud
	// refuses is errkind.Invalid.
	RegisterThing(ctx context.Context, templateBody string, params map[string]string) (certificatePem string, err error)
}

// KeyMaker is an optional provider extension (the aws provider has it)
// behind CDF.createDeviceAWSCertificate: the cloud makes the device's key
// pair and an ACTIVE certificate for it.
type KeyMaker interface {
	// CreateKeysAndCertificate returns the new certificate's and private
	// key's PEM. The key exists nowhere else: the caller must keep it.
	CreateKeysAndCertificate(ctx context.Context) (certPEM, keyPEM string, err error)
}

// cdfCertificateLogical is the logical id of the certificate resource
// added to a RegisterThing body whose template declares none while a CDF
// pre-step made one.
const cdfCertificateLogical = "cdfCertificate"

// createDeviceAWSCertificate is the CDF pre-step of the same name: it uses
// the planned certificate, or has the provider make a key and certificate
// (CreateKeysAndCertificate), then injects CertificatePem, CertificateId
// and CertificateArn. Before the provider call it evaluates the template
// with stand-in values, so an invalid template makes no certificate.
func (r *run) createDeviceAWSCertificate(ctx context.Context) error {
	if !r.doc.CDF.CreateDeviceAWSCertificate {
		return nil
	}
	km, ok := r.s.prov.(KeyMaker)
	if !ok {
		return invalid("CDF.createDeviceAWSCertificate needs --provider aws (AWS IoT makes that key and certificate): use CDF.createDeviceCertificate to have the broker's CA make them")
	}
	if p := r.req.PlannedCertificate; p != nil {
		cp := *p
		r.planned = &cp
	} else {
		r.injectAWSCertificate(strings.Repeat("0", 64), placeholder)
		r.planned = &Planned{CertificatePem: placeholder}
		if err := r.evalResources(); err != nil {
			return err
		}
		r.cert, r.policies, r.planned = nil, nil, nil
		certPEM, keyPEM, err := km.CreateKeysAndCertificate(ctx)
		if err != nil {
			return fmt.Errorf("create keys and certificate for %q: %w", r.thing.Name, err)
		}
		r.planned = &Planned{CertificatePem: certPEM, PrivateKeyPem: keyPEM}
	}
	c, err := certs.ParseCertificate(r.planned.CertificatePem)
	if err != nil {
		return invalid("the planned certificate cannot be read: %v", err)
	}
	id := certs.ID(c)
	r.injectAWSCertificate(id, r.planned.CertificatePem)
	r.privateKey = r.planned.PrivateKeyPem
	r.s.log.Info("device certificate made by AWS IoT", "thing", r.thing.Name, "certificateId", id)
	return nil
}

// transient reports trouble a retry may cure: a dependency that cannot
// serve now, or a cancelled context.
func transient(err error) bool {
	return errkind.Is(err, errkind.Unavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (r *run) injectAWSCertificate(id, pemText string) {
	r.e.injected["CertificatePem"] = pemText
	r.e.injected["CertificateId"] = id
	r.e.injected["CertificateArn"] = r.certARN(id)
}

func (r *run) certARN(id string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:cert/%s", r.s.region, r.s.account, id)
}

// declaresCertificate reports whether the template has an AWS::IoT::Certificate resource.
func (r *run) declaresCertificate() bool {
	for _, res := range r.doc.Resources {
		if res.Type == typeCertificate {
			return true
		}
	}
	return false
}

// register applies the evaluated run through reg: the pre-steps that need
// the provider (registerDeviceCertificateWithoutCA, the thing's groups),
// one RegisterThing, then the CDF post-steps. The crash-safety contract is
// the interpreter's: an existing thing is adopted only by a re-run with the
// planned certificate it holds (or none yet); anything else is
// errkind.Conflict. On failure it removes the thing and the certificates
// and policies this call made — except after a transient failure with a
// planned certificate the caller saved (req.PlannedCertificate): the retry
// adopts the thing and finishes, and a
// certificate AWS made (createDeviceAWSCertificate) must not be deleted
// from under the plan that holds its key.
func (r *run) register(ctx context.Context, reg ThingRegistrar) (res Result, err error) {
	var u undo
	defer func() {
		if err != nil && !(r.req.PlannedCertificate != nil && transient(err)) {
			r.rollback(context.WithoutCancel(ctx), u)
		}
	}()
	name := r.thing.Name
	if err := r.checkPEM(); err != nil {
		return Result{}, err
	}
	if err := r.checkPolicies(ctx); err != nil {
		return Result{}, err
	}
	plannedID := ""
	if r.planned != nil {
		if c, err := certs.ParseCertificate(r.planned.CertificatePem); err == nil {
			plannedID = certs.ID(c)
		}
	}
	existing, err := r.s.prov.DescribeThing(ctx, name)
	newThing := false
	switch {
	case err == nil:
		adopt := r.req.PlannedCertificate != nil && plannedID != "" &&
			(slices.Contains(existing.Principals, plannedID) || len(existing.Principals) == 0)
		if !adopt {
			return Result{}, errkind.New(errkind.Conflict, "thing %q is already provisioned", name)
		}
		r.s.log.Info("resuming provisioning of an existing thing", "thing", name, "certificateId", plannedID)
	case errkind.Is(err, errkind.NotFound):
		newThing = true
	default:
		return Result{}, fmt.Errorf("describe thing %q: %w", name, err)
	}

	res = Result{ThingName: name, PrivateKeyPem: r.privateKey, CaCertificatePem: r.caPEM}
	if w := r.withoutCA; w != nil {
		id, err := r.s.prov.RegisterCertificate(ctx, w.PEM, "", w.Status)
		if err != nil {
			return Result{}, fmt.Errorf("register certificate of %q: %w", name, err)
		}
		if newThing {
			u.certs = append(u.certs, id)
		}
		res.CertificatePem = w.PEM
	}
	// RegisterThing adds the thing to existing groups only.
	for _, g := range r.thing.Groups {
		if err := r.s.prov.CreateThingGroup(ctx, g, ""); err != nil {
			return Result{}, fmt.Errorf("create thing group %q: %w", g, err)
		}
	}

	body, params, err := r.registerThingInput()
	if err != nil {
		return Result{}, err
	}
	certPEM, err := reg.RegisterThing(ctx, body, params)
	if err != nil {
		if errkind.Is(err, errkind.Invalid) {
			return Result{}, invalid("RegisterThing refused provisioning template %q: %s", r.req.Template, msgOf(err))
		}
		return Result{}, fmt.Errorf("register thing %q: %w", name, err)
	}
	if newThing {
		u.thing = name // DeleteThing removes its attached certificates too
		u.certs = nil
	}
	switch {
	case r.planned != nil:
		res.CertificatePem = r.planned.CertificatePem
	case res.CertificatePem == "":
		res.CertificatePem = certPEM
	}
	if res.CertificatePem != "" {
		c, err := certs.ParseCertificate(res.CertificatePem)
		if err != nil {
			return Result{}, fmt.Errorf("read the certificate of thing %q: %w", name, err)
		}
		res.CertificateID = certs.ID(c)
	} else if r.cert != nil && r.cert.ID != "" {
		res.CertificateID = r.cert.ID
	}
	for _, p := range r.policies {
		res.Policies = append(res.Policies, p.Name)
	}
	for _, p := range r.doc.CDF.AttachAdditionalPolicies {
		if res.CertificateID == "" {
			return Result{}, invalid("CDF.attachAdditionalPolicies needs a certificate to attach %q to", p.Name)
		}
		if p.Document != "" {
			created, err := r.s.prov.PutPolicy(ctx, p.Name, p.Document)
			if err != nil {
				if errkind.Is(err, errkind.Invalid) {
					return Result{}, invalid("policy %q: %s", p.Name, msgOf(err))
				}
				return Result{}, fmt.Errorf("put policy %q: %w", p.Name, err)
			}
			if created {
				u.policies = append(u.policies, p.Name)
			}
		}
		if err := r.s.prov.AttachPolicy(ctx, p.Name, res.CertificateID); err != nil {
			if errkind.Is(err, errkind.NotFound) {
				return Result{}, invalid("policy %q does not exist: create it with PUT /registry/policies/%s", p.Name, p.Name)
			}
			return Result{}, fmt.Errorf("attach policy %q to certificate %s: %w", p.Name, res.CertificateID, err)
		}
		res.Policies = append(res.Policies, p.Name)
	}
	res.Policies = sortedUnique(res.Policies)
	r.s.log.Info("provisioned thing with RegisterThing", "thing", name, "template", r.req.Template, "certificateId", res.CertificateID)
	return res, nil
}

// checkPEM checks a certificate PEM the template registers (and that it was
// issued by the CA PEM given with it) before any side effect.
func (r *run) checkPEM() error {
	c := r.cert
	if c == nil || c.PEM == "" {
		return nil
	}
	cert, err := certs.ParseCertificate(c.PEM)
	if err != nil {
		return invalid("CertificatePem: %v", err)
	}
	if c.CAPEM == "" {
		return nil
	}
	ca, err := certs.ParseCertificate(c.CAPEM)
	if err != nil {
		return invalid("CACertificatePem: %v", err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return invalid("CertificatePem was not issued by CACertificatePem: %v", err)
	}
	if r.caPEM == "" {
		r.caPEM = c.CAPEM
	}
	return nil
}

// registerThingInput is the RegisterThing body and parameters: the stored
// template without its CDF section, with the parameters the CDF pre-steps
// inject declared, and a certificate resource for the certificate a
// pre-step made when the template declares none; the parameters are the
// supplied ones and the injected ones (which win).
func (r *run) registerThingInput() (string, map[string]string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.raw, &top); err != nil {
		return "", nil, invalid("the provisioning template is not valid JSON: %v", err)
	}
	delete(top, "CDF")
	var params map[string]json.RawMessage
	if raw, ok := top["Parameters"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if err := json.Unmarshal(raw, &params); err != nil {
			return "", nil, invalid("Parameters must be an object: %v", err)
		}
	}
	if params == nil {
		params = map[string]json.RawMessage{}
	}
	for k := range r.e.injected {
		if _, declared := params[k]; !declared {
			params[k] = json.RawMessage(`{"Type":"String"}`)
		}
	}
	if !r.declaresCertificate() && (r.planned != nil || r.withoutCA != nil) {
		var resources map[string]json.RawMessage
		if err := json.Unmarshal(top["Resources"], &resources); err != nil {
			return "", nil, invalid("Resources must be an object: %v", err)
		}
		logical := cdfCertificateLogical
		for n := 2; resources[logical] != nil; n++ {
			logical = fmt.Sprintf("%s%d", cdfCertificateLogical, n)
		}
		props := map[string]any{"CertificateId": map[string]string{"Ref": "CertificateId"}}
		if r.doc.CDF.CreateDeviceCertificate {
			props = map[string]any{"CertificatePem": map[string]string{"Ref": "CertificatePem"}, "Status": "ACTIVE"}
			if r.planned.CaCertificatePem != "" {
				props["CACertificatePem"] = map[string]string{"Ref": "CaCertificatePem"}
			}
		}
		b, err := json.Marshal(map[string]any{"Type": typeCertificate, "Properties": props})
		if err != nil {
			return "", nil, fmt.Errorf("encode certificate resource: %w", err)
		}
		resources[logical] = b
		if top["Resources"], err = json.Marshal(resources); err != nil {
			return "", nil, fmt.Errorf("encode resources: %w", err)
		}
	}
	var err error
	if top["Parameters"], err = json.Marshal(params); err != nil {
		return "", nil, fmt.Errorf("encode parameters: %w", err)
	}
	body, err := json.Marshal(top)
	if err != nil {
		return "", nil, fmt.Errorf("encode the RegisterThing template: %w", err)
	}
	values := map[string]string{}
	for k := range params {
		if v, ok := r.e.injected[k]; ok {
			values[k] = v
		} else if v, ok := r.req.Parameters[k]; ok {
			values[k] = v
		}
	}
	return string(body), values, nil
}
