package awsfake

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// IoT name patterns and limits (AWS IoT API reference).
var (
	thingNameRE     = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
	policyNameRE    = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
	certIDRE        = regexp.MustCompile(`^(0x)?[a-fA-F0-9]{64}$`)
	policyVersionRE = regexp.MustCompile(`^[0-9]+$`)
	attrNameRE      = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#-]{1,128}$`)
	attrValueRE     = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}$`)
	certARNRE       = regexp.MustCompile(`^arn:aws[a-z-]*:iot:[a-z0-9-]+:\d{12}:cert/([a-f0-9]{64})$`)
	groupDescRE     = regexp.MustCompile(`^[[:graph:] ]*$`)
)

// certStatuses is the CertificateStatus enum.
var certStatuses = []string{"ACTIVE", "INACTIVE", "REVOKED", "PENDING_TRANSFER", "REGISTER_INACTIVE", "PENDING_ACTIVATION"}

// maxPolicyVersions is AWS's limit of versions per policy.
const maxPolicyVersions = 5

type thing struct {
	name, id, typeName string
	attrs              map[string]string
	version            int64
	principals         map[string]bool // certificate ARNs
	groups             map[string]bool
}

type cert struct {
	id, pem, caID, status string
	created, modified     time.Time
	policies              map[string]bool
}

type policyVersion struct {
	id      int
	doc     string
	created time.Time
}

type policy struct {
	name       string
	versions   []policyVersion
	defaultVer int
	nextVer    int
	created    time.Time
	modified   time.Time
}

type group struct {
	name, id, desc string
	members        map[string]bool
}

type iotState struct {
	things   map[string]*thing
	certs    map[string]*cert
	policies map[string]*policy
	groups   map[string]*group
}

func newIoTState() iotState {
	return iotState{things: map[string]*thing{}, certs: map[string]*cert{}, policies: map[string]*policy{}, groups: map[string]*group{}}
}

func arn(resource string) string {
	return "arn:aws:iot:" + Region + ":" + Account + ":" + resource
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (f *Fake) routeIoT(mux *http.ServeMux) {
	h := func(pattern, op string, fn handlerFunc) { f.handle(mux, "iot", pattern, op, fn) }
	h("GET /things/{thingName}", "DescribeThing", f.describeThing)
	h("POST /things/{thingName}", "CreateThing", f.createThing)
	h("DELETE /things/{thingName}", "DeleteThing", f.deleteThing)
	h("GET /things/{thingName}/principals", "ListThingPrincipals", f.listThingPrincipals)
	h("PUT /things/{thingName}/principals", "AttachThingPrincipal", f.attachThingPrincipal)
	h("DELETE /things/{thingName}/principals", "DetachThingPrincipal", f.detachThingPrincipal)
	h("GET /things/{thingName}/thing-groups", "ListThingGroupsForThing", f.listThingGroupsForThing)
	h("GET /principals/things", "ListPrincipalThings", f.listPrincipalThings)
	h("POST /attached-policies/{target}", "ListAttachedPolicies", f.listAttachedPolicies)
	h("PUT /target-policies/{policyName}", "AttachPolicy", f.attachPolicy)
	h("POST /target-policies/{policyName}", "DetachPolicy", f.detachPolicy)
	h("POST /certificate/register", "RegisterCertificate", f.registerCertificate(true))
	h("POST /certificate/register-no-ca", "RegisterCertificateWithoutCA", f.registerCertificate(false))
	h("GET /certificates/{certificateId}", "DescribeCertificate", f.describeCertificate)
	h("PUT /certificates/{certificateId}", "UpdateCertificate", f.updateCertificate)
	h("DELETE /certificates/{certificateId}", "DeleteCertificate", f.deleteCertificate)
	h("GET /policies/{policyName}", "GetPolicy", f.getPolicy)
	h("POST /policies/{policyName}", "CreatePolicy", f.createPolicy)
	h("POST /policies/{policyName}/version", "CreatePolicyVersion", f.createPolicyVersion)
	h("GET /policies/{policyName}/version", "ListPolicyVersions", f.listPolicyVersions)
	h("DELETE /policies/{policyName}/version/{policyVersionId}", "DeletePolicyVersion", f.deletePolicyVersion)
	h("POST /thing-groups/{thingGroupName}", "CreateThingGroup", f.createThingGroup)
	h("GET /thing-groups/{thingGroupName}/things", "ListThingsInThingGroup", f.listThingsInThingGroup)
	h("PUT /thing-groups/addThingToThingGroup", "AddThingToThingGroup", f.addThingToThingGroup)
	h("PUT /thing-groups/removeThingFromThingGroup", "RemoveThingFromThingGroup", f.removeThingFromThingGroup)
	h("GET /endpoint", "DescribeEndpoint", f.describeEndpoint)
	h("POST /things", "RegisterThing", f.registerThing)
	h("POST /keys-and-certificate", "CreateKeysAndCertificate", f.createKeysAndCertificate)
	h("POST /certificates", "CreateCertificateFromCsr", f.createCertificateFromCsr)
	h("GET /registrationcode", "GetRegistrationCode", f.getRegistrationCode)
	h("POST /cacertificate", "RegisterCACertificate", f.registerCACertificate)
	h("GET /cacertificate/{certificateId}", "DescribeCACertificate", f.describeCACertificate)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, errorf(http.StatusNotFound, "UnknownOperationException", "the fake does not serve %s %s", r.Method, r.URL.Path))
	})
}

// checkThingName validates a thing or thing group name member.
func checkThingName(member, v string) *apiError {
	if !thingNameRE.MatchString(v) {
		return invalid("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+ and have length between 1 and 128", v, member)
	}
	return nil
}

func checkPolicyName(v string) *apiError {
	if !policyNameRE.MatchString(v) {
		return invalid("1 validation error detected: Value '%s' at 'policyName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and 128", v)
	}
	return nil
}

func checkCertID(v string) *apiError {
	if !certIDRE.MatchString(v) {
		return invalid("1 validation error detected: Value '%s' at 'certificateId' failed to satisfy constraint: Member must satisfy regular expression pattern: (0x)?[a-fA-F0-9]+ and have length 64", v)
	}
	return nil
}

// certARN validates a principal or target ARN and returns the certificate id.
func certFromARN(member, v string) (string, *apiError) {
	if v == "" {
		return "", invalid("%s is required", member)
	}
	m := certARNRE.FindStringSubmatch(v)
	if m == nil {
		return "", invalid("%s '%s' is not a valid certificate ARN (arn:aws:iot:<region>:<account>:cert/<certificateId>)", member, v)
	}
	return m[1], nil
}

// page returns items[from:from+size] and the next token ("" at the end).
func page(items []string, token, sizeParam string, def, maxSize int) ([]string, string, *apiError) {
	size := def
	if sizeParam != "" {
		n, err := strconv.Atoi(sizeParam)
		if err != nil || n < 1 || n > maxSize {
			return nil, "", invalid("page size %q must be between 1 and %d", sizeParam, maxSize)
		}
		size = n
	}
	from := 0
	if token != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(token, "tok-"))
		if err != nil || n < 0 || n > len(items) || !strings.HasPrefix(token, "tok-") {
			return nil, "", invalid("the pagination token %q is not valid", token)
		}
		from = n
	}
	to := min(from+size, len(items))
	next := ""
	if to < len(items) {
		next = "tok-" + strconv.Itoa(to)
	}
	return items[from:to], next, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (f *Fake) describeThing(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingName")
	if err := checkThingName("thingName", name); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.iot.things[name]
	if t == nil {
		return 0, nil, notFound("Thing %s cannot be found.", name)
	}
	out := map[string]any{
		"defaultClientId": t.name, "thingName": t.name, "thingId": t.id,
		"thingArn": arn("thing/" + t.name), "attributes": t.attrs, "version": t.version,
	}
	if t.typeName != "" {
		out["thingTypeName"] = t.typeName
	}
	return http.StatusOK, out, nil
}

func (f *Fake) createThing(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingName")
	if err := checkThingName("thingName", name); err != nil {
		return 0, nil, err
	}
	var in struct {
		ThingTypeName    string `json:"thingTypeName"`
		BillingGroupName string `json:"billingGroupName"`
		AttributePayload *struct {
			Attributes map[string]string `json:"attributes"`
			Merge      bool              `json:"merge"`
		} `json:"attributePayload"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	attrs := map[string]string{}
	if in.AttributePayload != nil {
		for k, v := range in.AttributePayload.Attributes {
			if !attrNameRE.MatchString(k) {
				return 0, nil, invalid("attribute name '%s' must satisfy regular expression pattern: [a-zA-Z0-9_.,@/:#-]+ and have length between 1 and 128", k)
			}
			if !attrValueRE.MatchString(v) {
				return 0, nil, invalid("attribute value '%s' must satisfy regular expression pattern: [a-zA-Z0-9_.,@/:#=\\[\\]-]* and have length at most 800", v)
			}
			attrs[k] = v
		}
	}
	if in.BillingGroupName != "" {
		return 0, nil, notFound("Billing group %s cannot be found.", in.BillingGroupName)
	}
	if in.ThingTypeName != "" {
		// The fake has no thing types; AWS rejects unknown ones.
		if err := checkThingName("thingTypeName", in.ThingTypeName); err != nil {
			return 0, nil, err
		}
		return 0, nil, notFound("Thing type %s cannot be found.", in.ThingTypeName)
	}
	if len(attrs) > 3 {
		return 0, nil, invalid("A thing without a thing type can have at most 3 attributes; got %d", len(attrs))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.iot.things[name]; t != nil {
		// AWS: same name and same configuration succeeds, else conflict.
		if fmt.Sprint(t.attrs) == fmt.Sprint(attrs) && t.typeName == in.ThingTypeName {
			return http.StatusOK, map[string]any{"thingName": name, "thingArn": arn("thing/" + name), "thingId": t.id}, nil
		}
		e := errorf(http.StatusConflict, "ResourceAlreadyExistsException", "Thing %s already exists in account with different attributes", name)
		e.Extra = map[string]any{"resourceId": t.id, "resourceArn": arn("thing/" + name)}
		return 0, nil, e
	}
	t := &thing{name: name, id: newID(), attrs: attrs, version: 1, principals: map[string]bool{}, groups: map[string]bool{}}
	f.iot.things[name] = t
	return http.StatusOK, map[string]any{"thingName": name, "thingArn": arn("thing/" + name), "thingId": t.id}, nil
}

func (f *Fake) deleteThing(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingName")
	if err := checkThingName("thingName", name); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.iot.things[name]
	if t == nil {
		return http.StatusOK, map[string]any{}, nil // AWS: deleting a missing thing succeeds
	}
	if v := r.URL.Query().Get("expectedVersion"); v != "" && v != strconv.FormatInt(t.version, 10) {
		return 0, nil, errorf(http.StatusConflict, "VersionConflictException", "The version for thing %s does not match the expected version.", name)
	}
	if len(t.principals) > 0 {
		return 0, nil, invalid("Cannot delete. Thing %s is still attached to one or more principals", name)
	}
	for g := range t.groups {
		if grp := f.iot.groups[g]; grp != nil {
			delete(grp.members, name)
		}
	}
	delete(f.iot.things, name)
	// A deleted thing is no longer a client device of any core.
	for _, c := range f.gg {
		delete(c.clients, name)
	}
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) thingOr404(name string) (*thing, *apiError) {
	if err := checkThingName("thingName", name); err != nil {
		return nil, err
	}
	t := f.iot.things[name]
	if t == nil {
		return nil, notFound("Thing %s cannot be found.", name)
	}
	return t, nil
}

func (f *Fake) listThingPrincipals(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.thingOr404(r.PathValue("thingName"))
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	items, next, err := page(sortedKeys(t.principals), q.Get("nextToken"), q.Get("maxResults"), 25, 250)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"principals": items, "nextToken": nilIfEmpty(next)}, nil
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (f *Fake) principalCert(r *http.Request) (*cert, *apiError) {
	id, err := certFromARN("principal", r.Header.Get("X-Amzn-Principal"))
	if err != nil {
		return nil, err
	}
	c := f.iot.certs[id]
	if c == nil {
		return nil, notFound("The certificate %s does not exist", id)
	}
	return c, nil
}

func (f *Fake) attachThingPrincipal(r *http.Request) (int, any, *apiError) {
	if tp := r.URL.Query().Get("thingPrincipalType"); tp != "" && tp != "EXCLUSIVE_THING" && tp != "NON_EXCLUSIVE_THING" {
		return 0, nil, invalid("thingPrincipalType '%s' must be one of EXCLUSIVE_THING, NON_EXCLUSIVE_THING", tp)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.thingOr404(r.PathValue("thingName"))
	if err != nil {
		return 0, nil, err
	}
	c, err := f.principalCert(r)
	if err != nil {
		return 0, nil, err
	}
	t.principals[arn("cert/"+c.id)] = true
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) detachThingPrincipal(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.thingOr404(r.PathValue("thingName"))
	if err != nil {
		return 0, nil, err
	}
	id, err := certFromARN("principal", r.Header.Get("X-Amzn-Principal"))
	if err != nil {
		return 0, nil, err
	}
	delete(t.principals, arn("cert/"+id))
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) listThingGroupsForThing(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.thingOr404(r.PathValue("thingName"))
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	names, next, err := page(sortedKeys(t.groups), q.Get("nextToken"), q.Get("maxResults"), 25, 250)
	if err != nil {
		return 0, nil, err
	}
	groups := []map[string]string{}
	for _, g := range names {
		groups = append(groups, map[string]string{"groupName": g, "groupArn": arn("thinggroup/" + g)})
	}
	return http.StatusOK, map[string]any{"thingGroups": groups, "nextToken": nilIfEmpty(next)}, nil
}

func (f *Fake) listPrincipalThings(r *http.Request) (int, any, *apiError) {
	id, err := certFromARN("principal", r.Header.Get("X-Amzn-Principal"))
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.iot.certs[id] == nil {
		return 0, nil, notFound("The certificate %s does not exist", id)
	}
	var names []string
	for _, t := range f.iot.things {
		if t.principals[arn("cert/"+id)] {
			names = append(names, t.name)
		}
	}
	sort.Strings(names)
	q := r.URL.Query()
	items, next, err := page(names, q.Get("nextToken"), q.Get("maxResults"), 25, 250)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"things": items, "nextToken": nilIfEmpty(next)}, nil
}

func (f *Fake) listAttachedPolicies(r *http.Request) (int, any, *apiError) {
	id, err := certFromARN("target", r.PathValue("target"))
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	if v := q.Get("recursive"); v != "" && v != "true" && v != "false" {
		return 0, nil, invalid("recursive must be true or false")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.iot.certs[id]
	if c == nil {
		return 0, nil, notFound("The certificate %s does not exist", id)
	}
	names, next, err := page(sortedKeys(c.policies), q.Get("marker"), q.Get("pageSize"), 25, 250)
	if err != nil {
		return 0, nil, err
	}
	pols := []map[string]string{}
	for _, n := range names {
		pols = append(pols, map[string]string{"policyName": n, "policyArn": arn("policy/" + n)})
	}
	return http.StatusOK, map[string]any{"policies": pols, "nextMarker": nilIfEmpty(next)}, nil
}

func (f *Fake) policyTarget(r *http.Request) (*policy, *cert, *apiError) {
	name := r.PathValue("policyName")
	if err := checkPolicyName(name); err != nil {
		return nil, nil, err
	}
	var in struct {
		Target string `json:"target"`
	}
	if err := decodeBody(r, &in); err != nil {
		return nil, nil, err
	}
	id, err := certFromARN("target", in.Target)
	if err != nil {
		return nil, nil, err
	}
	p := f.iot.policies[name]
	if p == nil {
		return nil, nil, notFound("Policy %s does not exist", name)
	}
	c := f.iot.certs[id]
	if c == nil {
		return nil, nil, notFound("The certificate %s does not exist", id)
	}
	return p, c, nil
}

func (f *Fake) attachPolicy(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, c, err := f.policyTarget(r)
	if err != nil {
		return 0, nil, err
	}
	if !c.policies[p.name] && len(c.policies) >= 10 {
		return 0, nil, errorf(http.StatusGone, "LimitExceededException", "A certificate can have at most 10 policies attached")
	}
	c.policies[p.name] = true
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) detachPolicy(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, c, err := f.policyTarget(r)
	if err != nil {
		return 0, nil, err
	}
	delete(c.policies, p.name)
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) registerCertificate(withCA bool) handlerFunc {
	return func(r *http.Request) (int, any, *apiError) {
		var in struct {
			CertificatePem   string `json:"certificatePem"`
			CACertificatePem string `json:"caCertificatePem"`
			Status           string `json:"status"`
		}
		if err := decodeBody(r, &in); err != nil {
			return 0, nil, err
		}
		if in.CertificatePem == "" || len(in.CertificatePem) > 65536 {
			return 0, nil, invalid("certificatePem is required and must have length between 1 and 65536")
		}
		status := in.Status
		if status == "" {
			status = "INACTIVE"
			if r.URL.Query().Get("setAsActive") == "true" {
				status = "ACTIVE"
			}
		}
		if !slices.Contains(certStatuses, status) {
			return 0, nil, invalid("status '%s' must be one of %s", status, strings.Join(certStatuses, ", "))
		}
		leaf, perr := parsePEM(in.CertificatePem)
		if perr != nil {
			return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The certificate is not valid: %v", perr)
		}
		caID := ""
		if withCA && in.CACertificatePem != "" {
			ca, err := parsePEM(in.CACertificatePem)
			if err != nil {
				return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The CA certificate is not valid: %v", err)
			}
			if err := leaf.CheckSignatureFrom(ca); err != nil {
				return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The certificate is not signed by the given CA certificate: %v", err)
			}
			caID = certID(ca)
		}
		id := certID(leaf)
		f.mu.Lock()
		defer f.mu.Unlock()
		if caID != "" {
			if aerr := f.checkIssuerLocked(caID); aerr != nil {
				return 0, nil, aerr
			}
		}
		if f.iot.certs[id] != nil {
			e := errorf(http.StatusConflict, "ResourceAlreadyExistsException", "The certificate is already provisioned or registered")
			e.Extra = map[string]any{"resourceId": id, "resourceArn": arn("cert/" + id)}
			return 0, nil, e
		}
		now := time.Now()
		f.iot.certs[id] = &cert{id: id, pem: in.CertificatePem, caID: caID, status: status, created: now, modified: now, policies: map[string]bool{}}
		return http.StatusOK, map[string]any{"certificateId": id, "certificateArn": arn("cert/" + id)}, nil
	}
}

func parsePEM(s string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// certID is AWS IoT's certificate id: hex SHA-256 of the DER.
func certID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func (f *Fake) certOr404(r *http.Request) (*cert, *apiError) {
	id := r.PathValue("certificateId")
	if err := checkCertID(id); err != nil {
		return nil, err
	}
	c := f.iot.certs[strings.ToLower(strings.TrimPrefix(id, "0x"))]
	if c == nil {
		return nil, notFound("The certificate %s does not exist", id)
	}
	return c, nil
}

func (f *Fake) describeCertificate(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.certOr404(r)
	if err != nil {
		return 0, nil, err
	}
	d := map[string]any{
		"certificateId": c.id, "certificateArn": arn("cert/" + c.id), "status": c.status,
		"certificatePem": c.pem, "ownedBy": Account, "creationDate": epoch(c.created),
		"lastModifiedDate": epoch(c.modified), "certificateMode": "DEFAULT",
	}
	if c.caID != "" {
		d["caCertificateId"] = c.caID
	} else {
		d["certificateMode"] = "SNI_ONLY"
	}
	return http.StatusOK, map[string]any{"certificateDescription": d}, nil
}

func (f *Fake) updateCertificate(r *http.Request) (int, any, *apiError) {
	status := r.URL.Query().Get("newStatus")
	if status == "" {
		return 0, nil, invalid("newStatus is required")
	}
	if !slices.Contains(certStatuses, status) {
		return 0, nil, invalid("newStatus '%s' must be one of %s", status, strings.Join(certStatuses, ", "))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.certOr404(r)
	if err != nil {
		return 0, nil, err
	}
	c.status, c.modified = status, time.Now()
	return http.StatusOK, nil, nil
}

func (f *Fake) deleteCertificate(r *http.Request) (int, any, *apiError) {
	force := r.URL.Query().Get("forceDelete") == "true"
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.certOr404(r)
	if err != nil {
		return 0, nil, err
	}
	if c.status == "ACTIVE" {
		return 0, nil, errorf(http.StatusNotAcceptable, "CertificateStateException", "Certificate must be deactivated before deletion.")
	}
	for _, t := range f.iot.things {
		if t.principals[arn("cert/"+c.id)] {
			return 0, nil, errorf(http.StatusConflict, "DeleteConflictException", "Things must be detached before deletion (arn: %s)", arn("cert/"+c.id))
		}
	}
	if len(c.policies) > 0 && !force {
		return 0, nil, errorf(http.StatusConflict, "DeleteConflictException", "Certificate policies must be detached before deletion (arn: %s)", arn("cert/"+c.id))
	}
	delete(f.iot.certs, c.id)
	return http.StatusOK, nil, nil
}

// checkPolicyDocument validates a policy document as AWS does: a JSON object
// with a Statement.
func checkPolicyDocument(doc string) *apiError {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &obj); err != nil || obj == nil {
		return errorf(http.StatusBadRequest, "MalformedPolicyException", "Policy document is malformed: it must be a JSON object")
	}
	if _, ok := obj["Statement"]; !ok {
		return errorf(http.StatusBadRequest, "MalformedPolicyException", "Policy document is missing required field : Statement")
	}
	if len(doc) > 20480 {
		return errorf(http.StatusBadRequest, "MalformedPolicyException", "Policy document is too large")
	}
	return nil
}

func (p *policy) defaultDoc() string {
	for _, v := range p.versions {
		if v.id == p.defaultVer {
			return v.doc
		}
	}
	return ""
}

func (f *Fake) getPolicy(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("policyName")
	if err := checkPolicyName(name); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.iot.policies[name]
	if p == nil {
		return 0, nil, notFound("Policy %s does not exist", name)
	}
	return http.StatusOK, map[string]any{
		"policyName": p.name, "policyArn": arn("policy/" + p.name), "policyDocument": p.defaultDoc(),
		"defaultVersionId": strconv.Itoa(p.defaultVer), "creationDate": epoch(p.created),
		"lastModifiedDate": epoch(p.modified), "generationId": newID(),
	}, nil
}

func (f *Fake) createPolicy(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("policyName")
	if err := checkPolicyName(name); err != nil {
		return 0, nil, err
	}
	var in struct {
		PolicyDocument *string `json:"policyDocument"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.PolicyDocument == nil {
		return 0, nil, invalid("policyDocument is required")
	}
	if err := checkPolicyDocument(*in.PolicyDocument); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.iot.policies[name] != nil {
		e := errorf(http.StatusConflict, "ResourceAlreadyExistsException", "Policy cannot be created - name already exists (name=%s)", name)
		e.Extra = map[string]any{"resourceId": name, "resourceArn": arn("policy/" + name)}
		return 0, nil, e
	}
	now := time.Now()
	f.iot.policies[name] = &policy{name: name, versions: []policyVersion{{id: 1, doc: *in.PolicyDocument, created: now}}, defaultVer: 1, nextVer: 2, created: now, modified: now}
	return http.StatusOK, map[string]any{"policyName": name, "policyArn": arn("policy/" + name), "policyDocument": *in.PolicyDocument, "policyVersionId": "1"}, nil
}

func (f *Fake) createPolicyVersion(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("policyName")
	if err := checkPolicyName(name); err != nil {
		return 0, nil, err
	}
	var in struct {
		PolicyDocument *string `json:"policyDocument"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.PolicyDocument == nil {
		return 0, nil, invalid("policyDocument is required")
	}
	if err := checkPolicyDocument(*in.PolicyDocument); err != nil {
		return 0, nil, err
	}
	setDefault := r.URL.Query().Get("setAsDefault") == "true"
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.iot.policies[name]
	if p == nil {
		return 0, nil, notFound("Policy %s does not exist", name)
	}
	if len(p.versions) >= maxPolicyVersions {
		return 0, nil, errorf(http.StatusConflict, "VersionsLimitExceededException", "The policy %s already has the maximum number of versions (5)", name)
	}
	now := time.Now()
	v := policyVersion{id: p.nextVer, doc: *in.PolicyDocument, created: now}
	p.nextVer++
	p.versions = append(p.versions, v)
	if setDefault {
		p.defaultVer = v.id
	}
	p.modified = now
	return http.StatusOK, map[string]any{"policyArn": arn("policy/" + name), "policyDocument": v.doc, "policyVersionId": strconv.Itoa(v.id), "isDefaultVersion": setDefault}, nil
}

func (f *Fake) listPolicyVersions(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("policyName")
	if err := checkPolicyName(name); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.iot.policies[name]
	if p == nil {
		return 0, nil, notFound("Policy %s does not exist", name)
	}
	out := []map[string]any{}
	for i := len(p.versions) - 1; i >= 0; i-- { // newest first, as AWS lists them
		v := p.versions[i]
		out = append(out, map[string]any{"versionId": strconv.Itoa(v.id), "isDefaultVersion": v.id == p.defaultVer, "createDate": epoch(v.created)})
	}
	return http.StatusOK, map[string]any{"policyVersions": out}, nil
}

func (f *Fake) deletePolicyVersion(r *http.Request) (int, any, *apiError) {
	name, vid := r.PathValue("policyName"), r.PathValue("policyVersionId")
	if err := checkPolicyName(name); err != nil {
		return 0, nil, err
	}
	if !policyVersionRE.MatchString(vid) {
		return 0, nil, invalid("policyVersionId '%s' must satisfy regular expression pattern: [0-9]+", vid)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.iot.policies[name]
	if p == nil {
		return 0, nil, notFound("Policy %s does not exist", name)
	}
	id, _ := strconv.Atoi(vid)
	if id == p.defaultVer {
		return 0, nil, errorf(http.StatusConflict, "DeleteConflictException", "Cannot delete the default version %s of policy %s", vid, name)
	}
	for i, v := range p.versions {
		if v.id == id {
			p.versions = slices.Delete(p.versions, i, i+1)
			return http.StatusOK, nil, nil
		}
	}
	return 0, nil, notFound("Version %s of policy %s does not exist", vid, name)
}

func (f *Fake) createThingGroup(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingGroupName")
	if err := checkThingName("thingGroupName", name); err != nil {
		return 0, nil, err
	}
	var in struct {
		ParentGroupName      string `json:"parentGroupName"`
		ThingGroupProperties *struct {
			ThingGroupDescription string `json:"thingGroupDescription"`
		} `json:"thingGroupProperties"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	desc := ""
	if in.ThingGroupProperties != nil {
		desc = in.ThingGroupProperties.ThingGroupDescription
	}
	if !groupDescRE.MatchString(desc) || len(desc) > 2028 {
		return 0, nil, invalid("thingGroupDescription must satisfy regular expression pattern: [\\p{Graph}\\x20]* and have length at most 2028")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.ParentGroupName != "" && f.iot.groups[in.ParentGroupName] == nil {
		return 0, nil, notFound("Thing group %s cannot be found.", in.ParentGroupName)
	}
	if g := f.iot.groups[name]; g != nil {
		if g.desc != desc {
			e := errorf(http.StatusConflict, "ResourceAlreadyExistsException", "Thing Group %s already exists in the account with different tags or properties", name)
			e.Extra = map[string]any{"resourceId": g.id, "resourceArn": arn("thinggroup/" + name)}
			return 0, nil, e
		}
		return http.StatusOK, map[string]any{"thingGroupName": name, "thingGroupArn": arn("thinggroup/" + name), "thingGroupId": g.id}, nil
	}
	g := &group{name: name, id: newID(), desc: desc, members: map[string]bool{}}
	f.iot.groups[name] = g
	return http.StatusOK, map[string]any{"thingGroupName": name, "thingGroupArn": arn("thinggroup/" + name), "thingGroupId": g.id}, nil
}

func (f *Fake) listThingsInThingGroup(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingGroupName")
	if err := checkThingName("thingGroupName", name); err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.iot.groups[name]
	if g == nil {
		return 0, nil, notFound("Thing group %s cannot be found.", name)
	}
	items, next, err := page(sortedKeys(g.members), q.Get("nextToken"), q.Get("maxResults"), 25, 250)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"things": items, "nextToken": nilIfEmpty(next)}, nil
}

// groupMembership decodes and resolves an Add/RemoveThingToThingGroup body.
func (f *Fake) groupMembership(r *http.Request) (thingName, groupName string, err *apiError) {
	var in struct {
		ThingName      string `json:"thingName"`
		ThingArn       string `json:"thingArn"`
		ThingGroupName string `json:"thingGroupName"`
		ThingGroupArn  string `json:"thingGroupArn"`
	}
	if err := decodeBody(r, &in); err != nil {
		return "", "", err
	}
	thingName, groupName = in.ThingName, in.ThingGroupName
	if thingName == "" && in.ThingArn != "" {
		thingName = strings.TrimPrefix(in.ThingArn, arn("thing/"))
	}
	if groupName == "" && in.ThingGroupArn != "" {
		groupName = strings.TrimPrefix(in.ThingGroupArn, arn("thinggroup/"))
	}
	if thingName == "" || groupName == "" {
		return "", "", invalid("give the thing (thingName or thingArn) and the group (thingGroupName or thingGroupArn)")
	}
	if err := checkThingName("thingName", thingName); err != nil {
		return "", "", err
	}
	if err := checkThingName("thingGroupName", groupName); err != nil {
		return "", "", err
	}
	return thingName, groupName, nil
}

func (f *Fake) addThingToThingGroup(r *http.Request) (int, any, *apiError) {
	tn, gn, err := f.groupMembership(r)
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, g := f.iot.things[tn], f.iot.groups[gn]
	if t == nil {
		return 0, nil, notFound("Thing %s cannot be found.", tn)
	}
	if g == nil {
		return 0, nil, notFound("Thing group %s cannot be found.", gn)
	}
	if !t.groups[gn] && len(t.groups) >= 10 {
		return 0, nil, invalid("Thing %s cannot be added to more than 10 thing groups", tn)
	}
	t.groups[gn], g.members[tn] = true, true
	return http.StatusOK, map[string]any{}, nil
}

func (f *Fake) removeThingFromThingGroup(r *http.Request) (int, any, *apiError) {
	tn, gn, err := f.groupMembership(r)
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, g := f.iot.things[tn], f.iot.groups[gn]
	if t == nil {
		return 0, nil, notFound("Thing %s cannot be found.", tn)
	}
	if g == nil {
		return 0, nil, notFound("Thing group %s cannot be found.", gn)
	}
	delete(t.groups, gn)
	delete(g.members, tn)
	return http.StatusOK, map[string]any{}, nil
}

// EndpointPrefix is the account-specific part of the fake's IoT endpoints.
const EndpointPrefix = "a1b2c3d4e5f6g7"

// describeEndpoint answers DescribeEndpoint for the endpoint types AWS
// knows; iot:Data is the legacy VeriSign endpoint, the others ATS. The
// ATS data endpoint is the fake's MQTT listener (mqtt.go), whose address
// carries its port.
func (f *Fake) describeEndpoint(r *http.Request) (int, any, *apiError) {
	var host string
	switch t := r.URL.Query().Get("endpointType"); t {
	case "iot:Data":
		host = EndpointPrefix + ".iot." + Region + ".amazonaws.com"
	case "", "iot:Data-ATS":
		host = f.DataEndpoint()
	case "iot:CredentialProvider":
		host = EndpointPrefix + ".credentials.iot." + Region + ".amazonaws.com"
	case "iot:Jobs":
		host = EndpointPrefix + ".jobs.iot." + Region + ".amazonaws.com"
	default:
		return 0, nil, invalid("Endpoint type %s is not valid: use iot:Data, iot:Data-ATS, iot:CredentialProvider or iot:Jobs", t)
	}
	return http.StatusOK, map[string]string{"endpointAddress": host}, nil
}
