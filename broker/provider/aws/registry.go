package aws

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// learnARN remembers the "arn:<partition>:iot:<region>:<account>:" prefix
// from an IoT ARN in a response, so certificate ARNs can be built from ids.
func (p *Provider) learnARN(arn *string) {
	if arn == nil {
		return
	}
	parts := strings.SplitN(*arn, ":", 6)
	if len(parts) != 6 || parts[2] != "iot" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.arnBase == "" {
		p.arnBase = strings.Join(parts[:5], ":") + ":"
	}
}

// certARN returns the ARN of a certificate id. Until an ARN has been seen,
// it asks DescribeCertificate (which also reports a missing certificate).
func (p *Provider) certARN(ctx context.Context, certID string) (string, error) {
	if err := checkCertID(certID); err != nil {
		return "", err
	}
	p.mu.Lock()
	base := p.arnBase
	p.mu.Unlock()
	if base != "" {
		return base + "cert/" + certID, nil
	}
	out, err := p.iot.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: &certID})
	if err != nil {
		return "", mapErr(err, "describe certificate %s", certID)
	}
	p.learnARN(out.CertificateDescription.CertificateArn)
	return sdkaws.ToString(out.CertificateDescription.CertificateArn), nil
}

// certIDOf returns the certificate id of a principal ARN, or "" when the
// principal is not a certificate.
func certIDOf(principal string) string {
	_, id, ok := strings.Cut(principal, ":cert/")
	if !ok {
		return ""
	}
	return id
}

// DescribeThing returns the thing with its groups, principals (certificate
// ids) and the policies attached to them. AWS does not report when a thing
// was created: CreatedAt is known for things this process created and zero
// otherwise.
func (p *Provider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	if err := provider.CheckName("thing name", name); err != nil {
		return provider.Thing{}, err
	}
	out, err := p.iot.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: &name})
	if err != nil {
		return provider.Thing{}, mapErr(err, "describe thing %q", name)
	}
	p.learnARN(out.ThingArn)
	t := provider.Thing{Name: name, ThingType: sdkaws.ToString(out.ThingTypeName), Attributes: map[string]string{}}
	for k, v := range out.Attributes {
		t.Attributes[k] = v
	}
	p.mu.Lock()
	t.CreatedAt = p.created[name]
	p.mu.Unlock()

	principals, err := p.thingPrincipals(ctx, name)
	if err != nil {
		return provider.Thing{}, err
	}
	policies := map[string]bool{}
	for _, pr := range principals {
		id := certIDOf(pr)
		if id == "" {
			continue
		}
		t.Principals = append(t.Principals, id)
		names, err := p.attachedPolicies(ctx, pr)
		if err != nil {
			return provider.Thing{}, err
		}
		for _, n := range names {
			policies[n] = true
		}
	}
	for n := range policies {
		t.Policies = append(t.Policies, n)
	}
	if t.Groups, err = p.thingGroups(ctx, name); err != nil {
		return provider.Thing{}, err
	}
	sort.Strings(t.Principals)
	sort.Strings(t.Policies)
	sort.Strings(t.Groups)
	return t, nil
}

// thingPrincipals lists the principal ARNs attached to a thing.
func (p *Provider) thingPrincipals(ctx context.Context, name string) ([]string, error) {
	var all []string
	pg := iot.NewListThingPrincipalsPaginator(p.iot, &iot.ListThingPrincipalsInput{ThingName: &name})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list principals of thing %q", name)
		}
		all = append(all, out.Principals...)
	}
	return all, nil
}

// thingGroups lists the groups a thing is a direct member of.
func (p *Provider) thingGroups(ctx context.Context, name string) ([]string, error) {
	var all []string
	pg := iot.NewListThingGroupsForThingPaginator(p.iot, &iot.ListThingGroupsForThingInput{ThingName: &name})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list groups of thing %q", name)
		}
		for _, g := range out.ThingGroups {
			all = append(all, sdkaws.ToString(g.GroupName))
		}
	}
	return all, nil
}

// attachedPolicies lists the policies attached to a principal ARN.
func (p *Provider) attachedPolicies(ctx context.Context, principal string) ([]string, error) {
	var all []string
	pg := iot.NewListAttachedPoliciesPaginator(p.iot, &iot.ListAttachedPoliciesInput{Target: &principal})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list policies of %s", principal)
		}
		for _, pol := range out.Policies {
			all = append(all, sdkaws.ToString(pol.PolicyName))
		}
	}
	return all, nil
}

// CreateThing creates a thing; errkind.Conflict if it exists. AWS's
// CreateThing succeeds for an existing thing with the same configuration,
// so the provider asks DescribeThing first.
func (p *Provider) CreateThing(ctx context.Context, name, thingType string, attributes map[string]string) error {
	if err := provider.CheckName("thing name", name); err != nil {
		return err
	}
	if thingType != "" {
		if err := provider.CheckName("thing type", thingType); err != nil {
			return err
		}
	}
	_, err := p.iot.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: &name})
	switch {
	case err == nil:
		return errkind.New(errkind.Conflict, "thing %q already exists", name)
	case !hasCode(err, notFoundCodes...):
		return mapErr(err, "create thing %q", name)
	}
	in := &iot.CreateThingInput{ThingName: &name}
	if thingType != "" {
		in.ThingTypeName = &thingType
	}
	if len(attributes) > 0 {
		in.AttributePayload = &iottypes.AttributePayload{Attributes: attributes}
	}
	out, err := p.iot.CreateThing(ctx, in)
	if err != nil {
		return mapErr(err, "create thing %q", name)
	}
	p.learnARN(out.ThingArn)
	p.mu.Lock()
	p.created[name] = p.nowForTs()
	p.mu.Unlock()
	return nil
}

// DeleteThing detaches the thing's principals, deletes the certificates no
// other thing uses (detaching their policies and deactivating them first, as
// AWS requires), removes the thing from its groups and deletes it. A missing
// thing is not an error; every step tolerates a re-run after a crash.
func (p *Provider) DeleteThing(ctx context.Context, name string) error {
	if err := provider.CheckName("thing name", name); err != nil {
		return err
	}
	principals, err := p.thingPrincipals(ctx, name)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete thing %q: %w", name, err)
	}
	for _, pr := range principals {
		if _, err := p.iot.DetachThingPrincipal(ctx, &iot.DetachThingPrincipalInput{ThingName: &name, Principal: &pr}); err != nil && !hasCode(err, notFoundCodes...) {
			return mapErr(err, "delete thing %q: detach principal %s", name, pr)
		}
		if id := certIDOf(pr); id != "" {
			if err := p.deleteUnusedCert(ctx, name, id, pr); err != nil {
				return fmt.Errorf("delete thing %q: %w", name, err)
			}
		}
	}
	groups, err := p.thingGroups(ctx, name)
	if err != nil && !errkind.Is(err, errkind.NotFound) {
		return fmt.Errorf("delete thing %q: %w", name, err)
	}
	for _, g := range groups {
		if err := p.RemoveThingFromGroup(ctx, name, g); err != nil {
			return fmt.Errorf("delete thing %q: %w", name, err)
		}
	}
	// DetachThingPrincipal is eventually consistent in AWS: DeleteThing may
	// still see the principal for a moment.
	err = retryWhile(ctx, func() error {
		_, err := p.iot.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: &name})
		return err
	}, func(err error) bool {
		return hasCode(err, "InvalidRequestException") && strings.Contains(awsMessage(err), "attached")
	})
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "delete thing %q", name)
	}
	p.mu.Lock()
	delete(p.created, name)
	p.mu.Unlock()
	p.log.Debug("deleted thing", "thing", name, "principals", len(principals), "groups", len(groups))
	return nil
}

// deleteUnusedCert deletes a certificate detached from thing when no other
// thing uses it: detach its policies, deactivate, delete.
func (p *Provider) deleteUnusedCert(ctx context.Context, thing, id, arn string) error {
	pg := iot.NewListPrincipalThingsPaginator(p.iot, &iot.ListPrincipalThingsInput{Principal: &arn})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if hasCode(err, notFoundCodes...) {
			return nil // already deleted by an earlier run
		}
		if err != nil {
			return mapErr(err, "list things of certificate %s", id)
		}
		for _, t := range out.Things {
			if t != thing {
				return nil // another thing uses it: keep it
			}
		}
	}
	policies, err := p.attachedPolicies(ctx, arn)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, pol := range policies {
		if _, err := p.iot.DetachPolicy(ctx, &iot.DetachPolicyInput{PolicyName: &pol, Target: &arn}); err != nil && !hasCode(err, notFoundCodes...) {
			return mapErr(err, "detach policy %q from certificate %s", pol, id)
		}
	}
	if _, err := p.iot.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: &id, NewStatus: iottypes.CertificateStatusInactive}); err != nil {
		if hasCode(err, notFoundCodes...) {
			return nil
		}
		return mapErr(err, "deactivate certificate %s", id)
	}
	err = retryWhile(ctx, func() error {
		_, err := p.iot.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: &id})
		return err
	}, func(err error) bool { return hasCode(err, "DeleteConflictException") })
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "delete certificate %s", id)
	}
	return nil
}

// retryWhile calls fn until it succeeds, fails with an error retryable does
// not accept, or 6 attempts (about 3 s) have passed.
func retryWhile(ctx context.Context, fn func() error, retryable func(error) bool) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !retryable(err) || attempt == 6 {
			return err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay *= 2
	}
}

// RegisterCertificate registers a certificate with AWS IoT and returns its
// id. With caPEM it calls RegisterCertificate (the CA must be registered in
// the account, as AWS requires); without, RegisterCertificateWithoutCA. An
// empty status means ACTIVE. A certificate already registered keeps its
// status and its id is returned.
func (p *Provider) RegisterCertificate(ctx context.Context, certPEM, caPEM, status string) (string, error) {
	status, err := provider.CertificateStatus(status)
	if err != nil {
		return "", err
	}
	cert, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "the certificate is not a valid PEM certificate")
	}
	id := certs.ID(cert)
	pemText := certs.EncodeCertificate(cert.Raw)
	var arn *string
	if strings.TrimSpace(caPEM) != "" {
		ca, err := certs.ParseCertificate(caPEM)
		if err != nil {
			return "", errkind.Wrap(errkind.Invalid, err, "the CA certificate is not a valid PEM certificate")
		}
		caText := certs.EncodeCertificate(ca.Raw)
		out, err := p.iot.RegisterCertificate(ctx, &iot.RegisterCertificateInput{
			CertificatePem: &pemText, CaCertificatePem: &caText, Status: iottypes.CertificateStatus(status),
		})
		if err == nil {
			arn = out.CertificateArn
		} else if !hasCode(err, "ResourceAlreadyExistsException") {
			return "", mapErr(err, "register certificate %s", id)
		}
	} else {
		out, err := p.iot.RegisterCertificateWithoutCA(ctx, &iot.RegisterCertificateWithoutCAInput{
			CertificatePem: &pemText, Status: iottypes.CertificateStatus(status),
		})
		if err == nil {
			arn = out.CertificateArn
		} else if !hasCode(err, "ResourceAlreadyExistsException") {
			return "", mapErr(err, "register certificate %s", id)
		}
	}
	p.learnARN(arn)
	return id, nil
}

// AttachThingPrincipal attaches a certificate to a thing (idempotent).
func (p *Provider) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	if err := provider.CheckName("thing name", thing); err != nil {
		return err
	}
	arn, err := p.certARN(ctx, certID)
	if err != nil {
		return fmt.Errorf("attach certificate %s to thing %q: %w", certID, thing, err)
	}
	if _, err := p.iot.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: &thing, Principal: &arn}); err != nil {
		return mapErr(err, "attach certificate %s to thing %q", certID, thing)
	}
	return nil
}

// DescribeCertificate returns a registered certificate or errkind.NotFound.
func (p *Provider) DescribeCertificate(ctx context.Context, certID string) (provider.Certificate, error) {
	if err := checkCertID(certID); err != nil {
		return provider.Certificate{}, err
	}
	out, err := p.iot.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: &certID})
	if err != nil {
		return provider.Certificate{}, mapErr(err, "describe certificate %s", certID)
	}
	d := out.CertificateDescription
	p.learnARN(d.CertificateArn)
	return provider.Certificate{
		ID:        sdkaws.ToString(d.CertificateId),
		PEM:       sdkaws.ToString(d.CertificatePem),
		CAID:      sdkaws.ToString(d.CaCertificateId),
		Status:    string(d.Status),
		CreatedAt: sdkaws.ToTime(d.CreationDate),
	}, nil
}

// GetPolicy returns a policy (its default version) or errkind.NotFound.
func (p *Provider) GetPolicy(ctx context.Context, name string) (provider.Policy, error) {
	if err := provider.CheckPolicyName(name); err != nil {
		return provider.Policy{}, err
	}
	out, err := p.iot.GetPolicy(ctx, &iot.GetPolicyInput{PolicyName: &name})
	if err != nil {
		return provider.Policy{}, mapErr(err, "get policy %q", name)
	}
	return provider.Policy{Name: name, Document: sdkaws.ToString(out.PolicyDocument)}, nil
}

// PutPolicy creates a policy, or replaces its document with a new default
// version (deleting the oldest non-default version when AWS's limit of five
// is reached). An unchanged document creates no version.
func (p *Provider) PutPolicy(ctx context.Context, name, document string) (bool, error) {
	if err := provider.CheckPolicyName(name); err != nil {
		return false, err
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(document), &obj); err != nil || obj == nil {
		return false, errkind.New(errkind.Invalid, "the document of policy %q must be a JSON object (an AWS IoT policy document with \"Version\" and \"Statement\")", name)
	}
	cur, err := p.iot.GetPolicy(ctx, &iot.GetPolicyInput{PolicyName: &name})
	if hasCode(err, notFoundCodes...) {
		_, err = p.iot.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: &name, PolicyDocument: &document})
		if err == nil {
			return true, nil
		}
		if !hasCode(err, "ResourceAlreadyExistsException") {
			return false, mapErr(err, "create policy %q", name)
		}
		// Created concurrently: replace it below.
	} else if err != nil {
		return false, mapErr(err, "get policy %q", name)
	} else if sameJSON(sdkaws.ToString(cur.PolicyDocument), document) {
		return false, nil
	}
	if err := p.makeRoomForVersion(ctx, name); err != nil {
		return false, err
	}
	_, err = p.iot.CreatePolicyVersion(ctx, &iot.CreatePolicyVersionInput{PolicyName: &name, PolicyDocument: &document, SetAsDefault: true})
	if err != nil {
		return false, mapErr(err, "create a version of policy %q", name)
	}
	return false, nil
}

// makeRoomForVersion deletes the oldest non-default version of a policy
// that has the maximum of five versions.
func (p *Provider) makeRoomForVersion(ctx context.Context, name string) error {
	out, err := p.iot.ListPolicyVersions(ctx, &iot.ListPolicyVersionsInput{PolicyName: &name})
	if err != nil {
		return mapErr(err, "list versions of policy %q", name)
	}
	if len(out.PolicyVersions) < 5 {
		return nil
	}
	oldest, oldestN := "", -1
	for _, v := range out.PolicyVersions {
		if v.IsDefaultVersion {
			continue
		}
		n, err := strconv.Atoi(sdkaws.ToString(v.VersionId))
		if err != nil {
			continue
		}
		if oldestN < 0 || n < oldestN {
			oldest, oldestN = sdkaws.ToString(v.VersionId), n
		}
	}
	if oldest == "" {
		return nil
	}
	_, err = p.iot.DeletePolicyVersion(ctx, &iot.DeletePolicyVersionInput{PolicyName: &name, PolicyVersionId: &oldest})
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "delete version %s of policy %q", oldest, name)
	}
	return nil
}

func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// AttachPolicy attaches an existing policy to a certificate (idempotent).
func (p *Provider) AttachPolicy(ctx context.Context, policy, certID string) error {
	if err := provider.CheckPolicyName(policy); err != nil {
		return err
	}
	arn, err := p.certARN(ctx, certID)
	if err != nil {
		return fmt.Errorf("attach policy %q to certificate %s: %w", policy, certID, err)
	}
	if _, err := p.iot.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: &policy, Target: &arn}); err != nil {
		return mapErr(err, "attach policy %q to certificate %s", policy, certID)
	}
	return nil
}

// CreateThingGroup creates a group; an existing group is not an error.
func (p *Provider) CreateThingGroup(ctx context.Context, name, description string) error {
	if err := provider.CheckName("thing group name", name); err != nil {
		return err
	}
	in := &iot.CreateThingGroupInput{ThingGroupName: &name}
	if description != "" {
		in.ThingGroupProperties = &iottypes.ThingGroupProperties{ThingGroupDescription: &description}
	}
	out, err := p.iot.CreateThingGroup(ctx, in)
	if hasCode(err, "ResourceAlreadyExistsException") {
		return nil
	}
	if err != nil {
		return mapErr(err, "create thing group %q", name)
	}
	p.learnARN(out.ThingGroupArn)
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
	if _, err := p.iot.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingName: &thing, ThingGroupName: &group}); err != nil {
		return mapErr(err, "add thing %q to group %q", thing, group)
	}
	return nil
}

// RemoveThingFromGroup removes a thing from a group; a missing thing or
// group is not an error.
func (p *Provider) RemoveThingFromGroup(ctx context.Context, thing, group string) error {
	if err := provider.CheckName("thing name", thing); err != nil {
		return err
	}
	if err := provider.CheckName("thing group name", group); err != nil {
		return err
	}
	_, err := p.iot.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingName: &thing, ThingGroupName: &group})
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "remove thing %q from group %q", thing, group)
	}
	return nil
}

// ListThingsInGroup returns the direct members of a group, sorted.
func (p *Provider) ListThingsInGroup(ctx context.Context, group string) ([]string, error) {
	if err := provider.CheckName("thing group name", group); err != nil {
		return nil, err
	}
	var all []string
	pg := iot.NewListThingsInThingGroupPaginator(p.iot, &iot.ListThingsInThingGroupInput{ThingGroupName: &group})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list things in group %q", group)
		}
		all = append(all, out.Things...)
	}
	sort.Strings(all)
	return all, nil
}
