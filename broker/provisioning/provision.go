package provisioning

import (
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"slices"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// defaultDaysExpiry is CDF's DEVICE_CERTIFICATE_EXPIRY_DAYS.
const defaultDaysExpiry = 365

// oidEmailAddress is the emailAddress attribute of a certificate subject.
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// PolicyDeleter is an optional provider extension: when the provider
// implements it, a failed provisioning deletes the policies it created.
type PolicyDeleter interface {
	DeletePolicy(ctx context.Context, name string) error
}

// CertificateDeleter is an optional provider extension: when the provider
// implements it, a failed provisioning deletes a certificate it registered
// but could not attach to the thing (DeleteThing removes attached ones).
type CertificateDeleter interface {
	DeleteCertificate(ctx context.Context, certID string) error
}

// run is one evaluation of a template for one request.
type run struct {
	s   *Service
	req Request
	doc *document
	e   *evaluator

	thing      thingSpec
	planned    *Planned  // the createDeviceCertificate or createDeviceAWSCertificate certificate
	raw        []byte    // the template document as stored
	withoutCA  *certSpec // the registerDeviceCertificateWithoutCA certificate
	cert       *certSpec // the certificate to register or attach, nil for none
	certID     string
	privateKey string
	caPEM      string
	resultPEM  string // the PEM of an existing certificate the template attaches
	policies   []policySpec
}

// Prepare evaluates the template for req and, when the template asks the
// broker to make the device certificate (CDF.createDeviceCertificate),
// generates the key and certificate; nil when it does not. It has no side
// effects on the provider, except for CDF.createDeviceAWSCertificate: AWS
// IoT makes that key and certificate (CreateKeysAndCertificate) and the key
// exists only in its answer, so Prepare makes it and the caller saves the
// plan before Provision, as for any plan.
func (s *Service) Prepare(ctx context.Context, req Request) (*Planned, error) {
	r, err := s.start(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := r.createDeviceCertificate(ctx); err != nil {
		return nil, err
	}
	if err := r.createDeviceAWSCertificate(ctx); err != nil {
		return nil, err
	}
	if err := r.evalResources(); err != nil {
		return nil, err
	}
	if r.planned != nil {
		// Provision with this plan (moments later, in this process) uses
		// the same template instead of reading and parsing it again.
		r.planned.origin = &planOrigin{template: parsedTemplate{name: req.Template, raw: r.raw, doc: r.doc},
			thing: r.thing.Name, certPEM: r.planned.CertificatePem, caPEM: r.planned.CaCertificatePem}
	}
	return r.planned, nil
}

// Provision applies the template through the provider: thing (attributes,
// type, groups), certificate (req.PlannedCertificate, a PEM, a CSR, an
// existing id, or none), policies (existing by name, or created from a
// document) and the CDF post-steps. A re-run with the same
// PlannedCertificate adopts a thing that already holds that certificate and
// finishes it; any other existing thing is errkind.Conflict. Template and
// parameter problems are errkind.Invalid with the item's failure reason as
// message. On failure it undoes what this call created.
//
// When the provider is a ThingRegistrar (aws mode), the template's resources
// are applied by one RegisterThing call instead of the interpreter; see
// register.go.
func (s *Service) Provision(ctx context.Context, req Request) (Result, error) {
	r, err := s.start(ctx, req)
	if err != nil {
		return Result{}, err
	}
	if err := r.createDeviceCertificate(ctx); err != nil {
		return Result{}, err
	}
	if err := r.createDeviceAWSCertificate(ctx); err != nil {
		return Result{}, err
	}
	if err := r.evalResources(); err != nil {
		return Result{}, err
	}
	if reg, ok := s.prov.(ThingRegistrar); ok {
		return r.register(ctx, reg)
	}
	if err := r.resolve(ctx); err != nil {
		return Result{}, err
	}
	return r.apply(ctx)
}

// start loads and parses the template and evaluates the thing resource.
func (s *Service) start(ctx context.Context, req Request) (*run, error) {
	if req.Template == "" {
		return nil, invalid("BadRequestError: INVALID_PROVISIONING_TEMPLATE: no provisioning template was named")
	}
	raw, doc, err := s.template(ctx, req)
	if err != nil {
		return nil, err
	}
	r := &run{s: s, req: req, doc: doc, raw: raw}
	r.e = &evaluator{doc: doc, supplied: req.Parameters, injected: map[string]string{},
		region: s.region, account: s.account}
	if req.CDF != nil && req.CDF.Csr != "" {
		if _, supplied := req.Parameters["CertificateSigningRequest"]; !supplied {
			r.e.injected["CertificateSigningRequest"] = req.CDF.Csr
		}
	}
	if err := r.registerWithoutCA(); err != nil {
		return nil, err
	}
	for _, logical := range doc.Logical {
		res := doc.Resources[logical]
		if res.Type != typeThing {
			continue
		}
		props, err := r.e.evalProps(logical, res.Properties)
		if err != nil {
			return nil, err
		}
		spec, err := interpret(logical, res.Type, props)
		if err != nil {
			return nil, err
		}
		r.thing = spec.(thingSpec)
	}
	if !thingNameRE.MatchString(r.thing.Name) {
		return nil, invalid("thing name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", r.thing.Name)
	}
	for _, g := range r.thing.Groups {
		if !thingNameRE.MatchString(g) {
			return nil, invalid("thing group name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", g)
		}
	}
	return r, nil
}

func (r *run) cdf() CDFParameters {
	if r.req.CDF == nil {
		return CDFParameters{}
	}
	return *r.req.CDF
}

// subject is the certificate subject for the thing: CN is always the thing
// name, the other fields come from certInfo.
func (r *run) subject() pkix.Name {
	n := pkix.Name{CommonName: r.thing.Name}
	ci := r.cdf().CertInfo
	if ci == nil {
		return n
	}
	add := func(dst *[]string, v string) {
		if v != "" {
			*dst = []string{v}
		}
	}
	add(&n.Organization, ci.Organization)
	add(&n.OrganizationalUnit, ci.OrganizationalUnit)
	add(&n.Locality, ci.Locality)
	add(&n.Province, ci.StateName)
	add(&n.Country, ci.Country)
	if ci.EmailAddress != "" {
		n.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: ci.EmailAddress}}
	}
	return n
}

func (r *run) days() (int, error) {
	ci := r.cdf().CertInfo
	if ci == nil || ci.DaysExpiry == 0 {
		return defaultDaysExpiry, nil
	}
	if ci.DaysExpiry < 0 {
		return 0, invalid("certInfo.daysExpiry must be a positive number of days, got %d", ci.DaysExpiry)
	}
	return ci.DaysExpiry, nil
}

// issue certifies pub for the thing with the request's CA.
func (r *run) issue(ctx context.Context, pub any) (certPEM, caPEM string, err error) {
	if r.s.issuer == nil {
		return "", "", invalid("this broker has no certificate authority to issue device certificates")
	}
	days, err := r.days()
	if err != nil {
		return "", "", err
	}
	certPEM, caPEM, err = r.s.issuer.Issue(ctx, r.cdf().CaID, pub, r.subject(), days)
	if errkind.Is(err, errkind.Invalid) {
		return "", "", invalid("cannot issue the device certificate: %s", msgOf(err))
	}
	if err != nil {
		return "", "", fmt.Errorf("issue certificate for %q: %w", r.thing.Name, err)
	}
	return certPEM, caPEM, nil
}

// createDeviceCertificate is the CDF pre-step of the same name: it uses the
// planned certificate, or makes a key (or takes the request's CSR) and has
// the CA certify it, then injects CertificatePem and CaCertificatePem.
func (r *run) createDeviceCertificate(ctx context.Context) error {
	if !r.doc.CDF.CreateDeviceCertificate {
		return nil
	}
	if p := r.req.PlannedCertificate; p != nil {
		// A plan Prepare made for this thing in this process needs no check.
		if o := p.origin; o == nil || o.thing != r.thing.Name || o.certPEM != p.CertificatePem {
			c, err := certs.ParseCertificate(p.CertificatePem)
			if err != nil {
				return invalid("the planned certificate cannot be read: %v", err)
			}
			if c.Subject.CommonName != r.thing.Name {
				return invalid("the planned certificate is for %q, not for thing %q", c.Subject.CommonName, r.thing.Name)
			}
		}
		cp := *p
		r.planned = &cp
	} else {
		var pub any
		keyPEM := ""
		if csrPEM := r.cdf().Csr; csrPEM != "" {
			csr, err := certs.ParseCSR(csrPEM)
			if err != nil {
				return invalid("cdfProvisioningParameters.csr: %v", err)
			}
			pub = csr.PublicKey
		} else {
			alg := ""
			if ci := r.cdf().CertInfo; ci != nil {
				alg = ci.KeyAlgorithm
			}
			if alg == "" && r.s.issuer != nil {
				var err error
				if alg, err = r.s.issuer.DefaultKeyAlgorithm(ctx, r.cdf().CaID); err != nil {
					if errkind.Is(err, errkind.Invalid) {
						return invalid("cdfProvisioningParameters.caId: %s", msgOf(err))
					}
					return fmt.Errorf("default key algorithm of CA %q: %w", r.cdf().CaID, err)
				}
			}
			if err := certs.CheckAlgorithm(alg); err != nil {
				return invalid("certInfo.keyAlgorithm: %v", err)
			}
			key, err := certs.GenerateKey(alg)
			if err != nil {
				return fmt.Errorf("generate device key: %w", err)
			}
			if keyPEM, err = certs.EncodeKey(key); err != nil {
				return err
			}
			pub = key.Public()
		}
		certPEM, caPEM, err := r.issue(ctx, pub)
		if err != nil {
			return err
		}
		r.planned = &Planned{CertificatePem: certPEM, PrivateKeyPem: keyPEM, CaCertificatePem: caPEM}
	}
	r.privateKey = r.planned.PrivateKeyPem
	r.caPEM = r.planned.CaCertificatePem
	r.e.injected["CertificatePem"] = r.planned.CertificatePem
	r.e.injected["CaCertificatePem"] = r.planned.CaCertificatePem
	return nil
}

// registerWithoutCA is the CDF pre-step registerDeviceCertificateWithoutCA:
// it injects CertificateId and CertificateArn of the request's certificate,
// which apply registers first.
func (r *run) registerWithoutCA() error {
	if !r.doc.CDF.RegisterDeviceCertificateWithoutCA || r.doc.CDF.CreateDeviceCertificate {
		return nil
	}
	cp := r.cdf()
	if cp.CertificatePem == "" {
		return invalid("CDF.registerDeviceCertificateWithoutCA needs cdfProvisioningParameters.certificatePem")
	}
	c, err := certs.ParseCertificate(cp.CertificatePem)
	if err != nil {
		return invalid("cdfProvisioningParameters.certificatePem: %v", err)
	}
	status := cp.CertificateStatus
	switch status {
	case "":
		status = "ACTIVE"
	case "ACTIVE", "INACTIVE":
	default:
		return invalid("cdfProvisioningParameters.certificateStatus must be ACTIVE or INACTIVE, got %q", status)
	}
	id := certs.ID(c)
	r.withoutCA = &certSpec{PEM: cp.CertificatePem, Status: status, ID: id}
	r.e.injected["CertificateId"] = id
	r.e.injected["CertificateArn"] = fmt.Sprintf("arn:aws:iot:%s:%s:cert/%s", r.s.region, r.s.account, id)
	return nil
}

// evalResources evaluates the certificate and policy resources.
func (r *run) evalResources() error {
	for _, logical := range r.doc.Logical {
		res := r.doc.Resources[logical]
		if res.Type == typeThing {
			continue
		}
		props, err := r.e.evalProps(logical, res.Properties)
		if err != nil {
			return err
		}
		spec, err := interpret(logical, res.Type, props)
		if err != nil {
			return err
		}
		switch t := spec.(type) {
		case certSpec:
			r.cert = &t
		case policySpec:
			if t.Name == "" {
				t.Name = r.thing.Name + "_" + logical
				if !policyNameRE.MatchString(t.Name) {
					return invalid("resource %q: give the policy a PolicyName (the generated name %q is not valid)", logical, t.Name)
				}
			}
			r.policies = append(r.policies, t)
		}
	}
	// A certificate the CDF section made is registered even when the template
	// does not declare a certificate resource for it.
	if r.cert == nil && r.planned != nil {
		r.cert = &certSpec{PEM: r.planned.CertificatePem, CAPEM: r.planned.CaCertificatePem, Status: "ACTIVE"}
	}
	if r.cert == nil && r.withoutCA != nil {
		r.cert = &certSpec{ID: r.withoutCA.ID, Status: r.withoutCA.Status}
	}
	if r.cert == nil && (len(r.policies) > 0 || len(r.doc.CDF.AttachAdditionalPolicies) > 0) {
		return invalid("the template attaches policies but provisions no certificate to attach them to")
	}
	return nil
}

// resolve checks everything that needs reading (certificates, existing
// policies) and signs a CSR, before any side effect.
func (r *run) resolve(ctx context.Context) error {
	if c := r.cert; c != nil {
		switch {
		case c.PEM != "":
			// The certificate and CA of a plan Prepare made in this process
			// come from the CA's Issue: reading them and checking the
			// signature again is wasted work.
			o := (*planOrigin)(nil)
			if r.planned != nil {
				o = r.planned.origin
			}
			if o != nil && c.PEM == o.certPEM && c.CAPEM == o.caPEM && c.CAPEM != "" {
				id, err := certs.IDOfPEM(c.PEM)
				if err != nil {
					return fmt.Errorf("read issued certificate: %w", err)
				}
				r.certID = id
				if r.caPEM == "" {
					r.caPEM = c.CAPEM
				}
				break
			}
			cert, err := certs.ParseCertificate(c.PEM)
			if err != nil {
				return invalid("CertificatePem: %v", err)
			}
			if c.CAPEM != "" {
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
			}
			r.certID = certs.ID(cert)
		case c.CSR != "":
			csr, err := certs.ParseCSR(c.CSR)
			if err != nil {
				return invalid("CertificateSigningRequest: %v", err)
			}
			certPEM, caPEM, err := r.issue(ctx, csr.PublicKey)
			if err != nil {
				return err
			}
			cert, err := certs.ParseCertificate(certPEM)
			if err != nil {
				return fmt.Errorf("read issued certificate: %w", err)
			}
			c.PEM, c.CAPEM, c.CSR = certPEM, caPEM, ""
			r.caPEM = caPEM
			r.certID = certs.ID(cert)
		case c.ID != "":
			r.certID = c.ID
			if r.withoutCA != nil && c.ID == r.withoutCA.ID {
				break // registered by apply
			}
			existing, err := r.s.prov.DescribeCertificate(ctx, c.ID)
			if errkind.Is(err, errkind.NotFound) {
				return invalid("certificate %q is not registered", c.ID)
			}
			if err != nil {
				return fmt.Errorf("describe certificate %q: %w", c.ID, err)
			}
			r.resultPEM = existing.PEM
		}
	}
	return r.checkPolicies(ctx)
}

// checkPolicies checks that every policy the template attaches by name
// only exists.
func (r *run) checkPolicies(ctx context.Context) error {
	memo := batchMemoOf(ctx)
	check := func(name, where string) error {
		if memo.hasPolicy(name) {
			return nil
		}
		_, err := r.s.prov.GetPolicy(ctx, name)
		if errkind.Is(err, errkind.NotFound) {
			return invalid("policy %q (%s) does not exist: create it with PUT /registry/policies/%s or give it a document", name, where, name)
		}
		if err != nil {
			return fmt.Errorf("get policy %q: %w", name, err)
		}
		memo.foundPolicy(name)
		return nil
	}
	for _, p := range r.policies {
		if p.Document == "" {
			if err := check(p.Name, "resource "+p.Logical); err != nil {
				return err
			}
		}
	}
	for _, p := range r.doc.CDF.AttachAdditionalPolicies {
		if p.Document == "" {
			if err := check(p.Name, "CDF.attachAdditionalPolicies"); err != nil {
				return err
			}
		}
	}
	return nil
}

// describeThing looks the thing up, unless the caller has just found none
// (Request.ThingAbsent).
func (r *run) describeThing(ctx context.Context, name string) (provider.Thing, error) {
	if r.req.ThingAbsent {
		return provider.Thing{}, errkind.New(errkind.NotFound, "thing %q does not exist", name)
	}
	return r.s.prov.DescribeThing(ctx, name)
}

// undo remembers what apply created, to remove it on failure.
type undo struct {
	thing    string
	certs    []string // registered and not (yet) attached
	policies []string
}

// apply makes the provider calls. On failure it removes what it created.
func (r *run) apply(ctx context.Context) (res Result, err error) {
	var u undo
	defer func() {
		if err != nil {
			r.rollback(context.WithoutCancel(ctx), u)
		}
	}()
	name := r.thing.Name
	existing, err := r.describeThing(ctx, name)
	switch {
	case err == nil:
		// A re-run with the planned certificate adopts the thing an
		// interrupted run made: it holds that certificate, or none yet (the
		// crash came between creating the thing and attaching it).
		adopt := r.req.PlannedCertificate != nil && r.certID != "" &&
			(slices.Contains(existing.Principals, r.certID) || len(existing.Principals) == 0)
		if !adopt {
			return Result{}, errkind.New(errkind.Conflict, "thing %q is already provisioned", name)
		}
		r.s.log.Info("resuming provisioning of an existing thing", "thing", name, "certificateId", r.certID)
	case errkind.Is(err, errkind.NotFound):
		if err := r.s.prov.CreateThing(ctx, name, r.thing.ThingType, r.thing.Attributes); err != nil {
			if errkind.Is(err, errkind.Conflict) {
				return Result{}, errkind.Wrap(errkind.Conflict, err, "thing %q is already provisioned", name)
			}
			return Result{}, fmt.Errorf("create thing %q: %w", name, err)
		}
		u.thing = name
	default:
		return Result{}, fmt.Errorf("describe thing %q: %w", name, err)
	}

	res = Result{ThingName: name, PrivateKeyPem: r.privateKey, CaCertificatePem: r.caPEM}
	if w := r.withoutCA; w != nil {
		id, err := r.s.prov.RegisterCertificate(ctx, w.PEM, "", w.Status)
		if err != nil {
			return Result{}, fmt.Errorf("register certificate of %q: %w", name, err)
		}
		u.certs = append(u.certs, id)
		if id != w.ID {
			return Result{}, fmt.Errorf("register certificate of %q: the provider returned id %s, want %s", name, id, w.ID)
		}
		res.CertificatePem = w.PEM
	}
	if c := r.cert; c != nil {
		certID := r.certID
		if c.PEM != "" {
			id, err := r.s.prov.RegisterCertificate(ctx, c.PEM, c.CAPEM, c.Status)
			if err != nil {
				return Result{}, fmt.Errorf("register certificate of %q: %w", name, err)
			}
			certID = id
			u.certs = append(u.certs, id)
			res.CertificatePem = c.PEM
		} else if res.CertificatePem == "" {
			res.CertificatePem = r.resultPEM
		}
		if err := r.s.prov.AttachThingPrincipal(ctx, name, certID); err != nil {
			return Result{}, fmt.Errorf("attach certificate %s to thing %q: %w", certID, name, err)
		}
		// DeleteThing removes attached certificates.
		u.certs = slices.DeleteFunc(u.certs, func(id string) bool { return id == certID })
		res.CertificateID = certID
		attach := func(policy, doc string) error {
			if doc != "" {
				created, err := r.s.prov.PutPolicy(ctx, policy, doc)
				if err != nil {
					if errkind.Is(err, errkind.Invalid) {
						return invalid("policy %q: %s", policy, msgOf(err))
					}
					return fmt.Errorf("put policy %q: %w", policy, err)
				}
				if created {
					u.policies = append(u.policies, policy)
				}
			}
			if err := r.s.prov.AttachPolicy(ctx, policy, certID); err != nil {
				if errkind.Is(err, errkind.NotFound) {
					return invalid("policy %q does not exist: create it with PUT /registry/policies/%s", policy, policy)
				}
				return fmt.Errorf("attach policy %q to certificate %s: %w", policy, certID, err)
			}
			res.Policies = append(res.Policies, policy)
			return nil
		}
		for _, p := range r.policies {
			if err := attach(p.Name, p.Document); err != nil {
				return Result{}, err
			}
		}
		for _, p := range r.doc.CDF.AttachAdditionalPolicies {
			if err := attach(p.Name, p.Document); err != nil {
				return Result{}, err
			}
		}
		res.Policies = sortedUnique(res.Policies)
	}
	for _, g := range r.thing.Groups {
		if err := r.s.prov.CreateThingGroup(ctx, g, ""); err != nil {
			return Result{}, fmt.Errorf("create thing group %q: %w", g, err)
		}
		if err := r.s.prov.AddThingToGroup(ctx, name, g); err != nil {
			return Result{}, fmt.Errorf("add thing %q to group %q: %w", name, g, err)
		}
	}
	r.s.log.Info("provisioned thing", "thing", name, "template", r.req.Template, "certificateId", res.CertificateID)
	return res, nil
}

// rollback removes what a failed apply created, logging what it cannot.
func (r *run) rollback(ctx context.Context, u undo) {
	if u.thing != "" {
		if err := r.s.prov.DeleteThing(ctx, u.thing); err != nil {
			r.s.log.Error("undo provisioning: delete thing", "thing", u.thing, "err", err)
		}
	}
	if d, ok := r.s.prov.(CertificateDeleter); ok {
		for _, id := range u.certs {
			if err := d.DeleteCertificate(ctx, id); err != nil {
				r.s.log.Error("undo provisioning: delete certificate", "certificateId", id, "err", err)
			}
		}
	}
	if d, ok := r.s.prov.(PolicyDeleter); ok {
		for _, p := range u.policies {
			if err := d.DeletePolicy(ctx, p); err != nil {
				r.s.log.Error("undo provisioning: delete policy", "policy", p, "err", err)
			}
		}
	}
}
