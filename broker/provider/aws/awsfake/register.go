package awsfake

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provisioning"
)

// RegisterThing's length limits (AWS IoT API reference).
const (
	maxTemplateBody   = 10240
	maxParameterKey   = 2048
	maxParameterValue = 4096
)

// overrideValues are the values OverrideSettings may take.
var overrideValues = []string{"DO_NOTHING", "REPLACE", "MERGE", "FAIL"}

// overrideKeys are the properties OverrideSettings may name, per resource type.
var overrideKeys = map[string][]string{
	"thing":       {"AttributePayload", "ThingTypeName", "ThingGroups"},
	"certificate": {"Status"},
}

func registrationFailed(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "ResourceRegistrationFailureException", format, args...)
}

// registerThing answers RegisterThing (POST /things): it evaluates the
// template with the broker's own evaluator (provisioning.EvaluateTemplate),
// checks everything first and then, atomically, creates or reuses the
// thing, registers or reuses the certificate (or signs the template's CSR),
// creates or reuses the policies and attaches them, and adds the thing to
// its groups — state every other operation sees.
//
// Existing resources, as AWS treats them: an existing thing is kept and its
// AttributePayload, ThingTypeName and ThingGroups are changed only as the
// resource's OverrideSettings say (REPLACE, MERGE, FAIL; DO_NOTHING is the
// default); a certificate whose PEM is already registered is reused (its
// status changed only with OverrideSettings Status REPLACE); a policy that
// exists is attached as it is. So a retried RegisterThing makes nothing
// twice — except for a CertificateSigningRequest, which yields a new
// certificate on every call, as in AWS.
//
// Like AWS, RegisterThing performs other control-plane actions; the fake
// counts each one it performs under its own operation name in Calls
// (CreateThing, RegisterCertificate, AttachPolicy, …) but does not charge
// them to those operations' quotas.
func (f *Fake) registerThing(r *http.Request) (int, any, *apiError) {
	var in struct {
		TemplateBody *string           `json:"templateBody"`
		Parameters   map[string]string `json:"parameters"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.TemplateBody == nil {
		return 0, nil, invalid("1 validation error detected: Value null at 'templateBody' failed to satisfy constraint: Member must not be null")
	}
	if len(*in.TemplateBody) > maxTemplateBody {
		return 0, nil, invalid("1 validation error detected: Value at 'templateBody' failed to satisfy constraint: Member must have length less than or equal to %d", maxTemplateBody)
	}
	for k, v := range in.Parameters {
		if len(k) > maxParameterKey || len(v) > maxParameterValue {
			return 0, nil, invalid("1 validation error detected: parameters: keys must have length at most %d and values at most %d (parameter %q)", maxParameterKey, maxParameterValue, k)
		}
	}
	ev, err := provisioning.EvaluateTemplate([]byte(*in.TemplateBody), in.Parameters, Region, Account)
	if err != nil {
		return 0, nil, invalid("The template is not valid: %s", errkind.Message(err))
	}
	if ev.HasCDF {
		return 0, nil, invalid("The template is not valid: unknown top-level section CDF (it is ggfleet's extension, not part of a RegisterThing template)")
	}
	plan, aerr := checkEvaluated(ev)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if aerr := f.checkRegistration(plan); aerr != nil {
		return 0, nil, aerr
	}
	return f.applyRegistration(plan)
}

// registration is a checked RegisterThing request.
type registration struct {
	ev       provisioning.Evaluated
	attrs    map[string]string
	leafID   string // id of a CertificatePem, "" otherwise
	caID     string
	policies []provisioning.EvaluatedPolicy // named
}

// checkEvaluated checks what needs no state: names, attributes, override
// settings, certificates and policy documents.
func checkEvaluated(ev provisioning.Evaluated) (*registration, *apiError) {
	p := &registration{ev: ev, attrs: map[string]string{}}
	if err := checkThingName("ThingName", ev.Thing.Name); err != nil {
		return nil, err
	}
	for k, v := range ev.Thing.Attributes {
		if !attrNameRE.MatchString(k) || !attrValueRE.MatchString(v) {
			return nil, invalid("attribute '%s'='%s' must satisfy regular expression patterns [a-zA-Z0-9_.,@/:#-]+ and [a-zA-Z0-9_.,@/:#=\\[\\]-]*", k, v)
		}
		p.attrs[k] = v
	}
	if len(p.attrs) > 3 {
		return nil, invalid("A thing without a thing type can have at most 3 attributes; got %d", len(p.attrs))
	}
	if ev.Thing.ThingType != "" {
		if err := checkThingName("ThingTypeName", ev.Thing.ThingType); err != nil {
			return nil, err
		}
		return nil, registrationFailed("Thing type %s cannot be found.", ev.Thing.ThingType)
	}
	for _, g := range ev.Thing.Groups {
		if err := checkThingName("ThingGroups", g); err != nil {
			return nil, err
		}
	}
	if len(ev.Thing.Groups) > 10 {
		return nil, invalid("A thing can be in at most 10 thing groups; the template names %d", len(ev.Thing.Groups))
	}
	if err := checkOverride("thing", ev.Thing.Override); err != nil {
		return nil, err
	}
	if c := ev.Certificate; c != nil {
		if err := checkOverride("certificate", c.Override); err != nil {
			return nil, err
		}
		switch {
		case c.PEM != "":
			leaf, err := parsePEM(c.PEM)
			if err != nil {
				return nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The certificate is not valid: %v", err)
			}
			if c.CAPEM != "" {
				ca, err := parsePEM(c.CAPEM)
				if err != nil {
					return nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The CA certificate is not valid: %v", err)
				}
				if err := leaf.CheckSignatureFrom(ca); err != nil {
					return nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The certificate is not signed by the given CA certificate: %v", err)
				}
				p.caID = certID(ca)
			}
			p.leafID = certID(leaf)
		case c.CSR != "":
			if _, err := parseCSR(c.CSR); err != nil {
				return nil, err
			}
		default:
			if err := checkCertID(c.ID); err != nil {
				return nil, err
			}
		}
	}
	for _, pol := range ev.Policies {
		if pol.Name == "" {
			pol.Name = ev.Thing.Name + "_" + pol.Logical
		}
		if err := checkPolicyName(pol.Name); err != nil {
			return nil, err
		}
		if pol.Document != "" {
			if err := checkPolicyDocument(pol.Document); err != nil {
				return nil, err
			}
		}
		p.policies = append(p.policies, pol)
	}
	if len(p.policies) > 10 {
		return nil, errorf(http.StatusGone, "LimitExceededException", "A certificate can have at most 10 policies attached; the template has %d", len(p.policies))
	}
	if len(p.policies) > 0 && ev.Certificate == nil {
		return nil, invalid("The template is not valid: a policy resource needs a certificate resource to attach to")
	}
	return p, nil
}

func checkOverride(kind string, o map[string]string) *apiError {
	for k, v := range o {
		if !slices.Contains(overrideKeys[kind], k) {
			return invalid("The template is not valid: OverrideSettings of the %s resource cannot name %s: use %s", kind, k, strings.Join(overrideKeys[kind], ", "))
		}
		if !slices.Contains(overrideValues, v) || (v == "MERGE" && k != "AttributePayload" && k != "ThingGroups") {
			return invalid("The template is not valid: OverrideSettings.%s '%s' must be one of DO_NOTHING, REPLACE, FAIL (or MERGE for AttributePayload and ThingGroups)", k, v)
		}
	}
	return nil
}

// checkRegistration checks the plan against the state. Callers hold f.mu.
func (f *Fake) checkRegistration(p *registration) *apiError {
	ev := p.ev
	for _, g := range ev.Thing.Groups {
		if f.iot.groups[g] == nil {
			return registrationFailed("Thing group %s cannot be found.", g)
		}
	}
	if t := f.iot.things[ev.Thing.Name]; t != nil {
		o := ev.Thing.Override
		if o["AttributePayload"] == "FAIL" && !maps.Equal(t.attrs, p.attrs) {
			return registrationFailed("Thing %s already exists with different attributes (OverrideSettings AttributePayload FAIL)", t.name)
		}
		if o["ThingGroups"] == "FAIL" && !slices.Equal(sortedKeys(t.groups), sortedSet(ev.Thing.Groups)) {
			return registrationFailed("Thing %s already exists in other thing groups (OverrideSettings ThingGroups FAIL)", t.name)
		}
		if o["ThingTypeName"] == "FAIL" && t.typeName != ev.Thing.ThingType {
			return registrationFailed("Thing %s already exists with another thing type (OverrideSettings ThingTypeName FAIL)", t.name)
		}
	}
	if c := ev.Certificate; c != nil {
		switch {
		case c.PEM != "":
			if p.caID != "" {
				if aerr := f.checkIssuerLocked(p.caID); aerr != nil {
					return registrationFailed("%s", aerr.Message)
				}
			}
			if old := f.iot.certs[p.leafID]; old != nil && c.Override["Status"] == "FAIL" && old.status != c.Status {
				return registrationFailed("Certificate %s already exists with status %s (OverrideSettings Status FAIL)", old.id, old.status)
			}
		case c.ID != "":
			if f.iot.certs[strings.ToLower(strings.TrimPrefix(c.ID, "0x"))] == nil {
				return registrationFailed("The certificate %s does not exist", c.ID)
			}
		}
	}
	for _, pol := range p.policies {
		if pol.Document == "" && f.iot.policies[pol.Name] == nil {
			return registrationFailed("Policy %s does not exist", pol.Name)
		}
	}
	return nil
}

// applyRegistration makes the checked plan's changes. Callers hold f.mu.
func (f *Fake) applyRegistration(p *registration) (int, any, *apiError) {
	ev := p.ev
	now := time.Now()
	arns := map[string]string{}
	// The certificate first: a CSR is the only step that can still fail.
	var c *cert
	if ec := ev.Certificate; ec != nil {
		switch {
		case ec.CSR != "":
			csr, aerr := parseCSR(ec.CSR)
			if aerr != nil {
				return 0, nil, aerr
			}
			var err *apiError
			if c, err = f.issueLocked(csr.PublicKey, csr.Subject, ec.Status); err != nil {
				return 0, nil, err
			}
			f.calls["CreateCertificateFromCsr"]++
		case ec.PEM != "":
			c = f.iot.certs[p.leafID]
			if c == nil {
				c = &cert{id: p.leafID, pem: ec.PEM, caID: p.caID, status: ec.Status, created: now, modified: now, policies: map[string]bool{}}
				f.iot.certs[c.id] = c
				if p.caID != "" {
					f.calls["RegisterCertificate"]++
				} else {
					f.calls["RegisterCertificateWithoutCA"]++
				}
			} else if ec.Override["Status"] == "REPLACE" && c.status != ec.Status {
				c.status, c.modified = ec.Status, now
				f.calls["UpdateCertificate"]++
			}
		default:
			c = f.iot.certs[strings.ToLower(strings.TrimPrefix(ec.ID, "0x"))]
		}
		arns["certificate"] = arn("cert/" + c.id)
	}

	name := ev.Thing.Name
	t := f.iot.things[name]
	if t == nil {
		t = &thing{name: name, id: newID(), attrs: p.attrs, version: 1, principals: map[string]bool{}, groups: map[string]bool{}}
		f.iot.things[name] = t
		f.calls["CreateThing"]++
		for _, g := range ev.Thing.Groups {
			f.addToGroupLocked(t, g)
		}
	} else {
		o := ev.Thing.Override
		switch o["AttributePayload"] {
		case "REPLACE":
			t.attrs = maps.Clone(p.attrs)
			t.version++
		case "MERGE":
			maps.Copy(t.attrs, p.attrs)
			t.version++
		}
		if o["ThingTypeName"] == "REPLACE" {
			t.typeName = ev.Thing.ThingType
		}
		switch o["ThingGroups"] {
		case "REPLACE":
			for g := range t.groups {
				if !slices.Contains(ev.Thing.Groups, g) {
					delete(t.groups, g)
					if grp := f.iot.groups[g]; grp != nil {
						delete(grp.members, name)
					}
					f.calls["RemoveThingFromThingGroup"]++
				}
			}
			fallthrough
		case "MERGE":
			for _, g := range ev.Thing.Groups {
				f.addToGroupLocked(t, g)
			}
		}
	}
	arns["thing"] = arn("thing/" + name)
	if c != nil {
		if !t.principals[arn("cert/"+c.id)] {
			t.principals[arn("cert/"+c.id)] = true
			f.calls["AttachThingPrincipal"]++
		}
		for _, pol := range p.policies {
			if f.iot.policies[pol.Name] == nil {
				f.iot.policies[pol.Name] = &policy{name: pol.Name, versions: []policyVersion{{id: 1, doc: pol.Document, created: now}},
					defaultVer: 1, nextVer: 2, created: now, modified: now}
				f.calls["CreatePolicy"]++
			}
			if !c.policies[pol.Name] {
				c.policies[pol.Name] = true
				f.calls["AttachPolicy"]++
			}
			arns["policy"] = arn("policy/" + pol.Name)
		}
	}
	out := map[string]any{"resourceArns": arns}
	if c != nil {
		out["certificatePem"] = c.pem
	}
	return http.StatusOK, out, nil
}

// addToGroupLocked adds t to an existing group g. Callers hold f.mu.
func (f *Fake) addToGroupLocked(t *thing, g string) {
	if t.groups[g] {
		return
	}
	t.groups[g] = true
	f.iot.groups[g].members[t.name] = true
	f.calls["AddThingToThingGroup"]++
}

func sortedSet(list []string) []string {
	m := map[string]bool{}
	for _, s := range list {
		m[s] = true
	}
	return sortedKeys(m)
}

// ThingState is a thing as the fake holds it, for tests that look behind
// the API (for example at what an interrupted call left).
type ThingState struct {
	Name       string
	Attributes map[string]string
	Groups     []string // sorted
	Principals []string // certificate ids, sorted
}

// Thing returns the thing name as the fake holds it, and whether it exists.
func (f *Fake) Thing(name string) (ThingState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.iot.things[name]
	if t == nil {
		return ThingState{}, false
	}
	st := ThingState{Name: t.name, Attributes: maps.Clone(t.attrs), Groups: sortedKeys(t.groups)}
	for _, p := range sortedKeys(t.principals) {
		if m := certARNRE.FindStringSubmatch(p); m != nil {
			st.Principals = append(st.Principals, m[1])
		}
	}
	return st, true
}
