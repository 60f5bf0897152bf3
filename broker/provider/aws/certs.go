package aws

import (
	"context"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provisioning"
)

var (
	_ provisioning.KeyMaker           = (*Provider)(nil)
	_ provisioning.CertificateDeleter = (*Provider)(nil)
)

// CreateKeysAndCertificate has AWS IoT make a key pair and an ACTIVE
// certificate for it (CDF.createDeviceAWSCertificate). The private key is
// only in AWS's answer: the caller keeps it (certs.zip) and never logs it.
func (p *Provider) CreateKeysAndCertificate(ctx context.Context) (certPEM, keyPEM string, err error) {
	out, err := p.iot.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		return "", "", mapErr(err, "create keys and certificate")
	}
	if out.KeyPair == nil || sdkaws.ToString(out.KeyPair.PrivateKey) == "" || sdkaws.ToString(out.CertificatePem) == "" {
		return "", "", fmt.Errorf("create keys and certificate: AWS answered without a certificate or private key")
	}
	p.learnARN(out.CertificateArn)
	return sdkaws.ToString(out.CertificatePem), sdkaws.ToString(out.KeyPair.PrivateKey), nil
}

// CreateCertificateFromCsr has AWS IoT certify the key of a CSR (the key
// stays on the device) and returns the ACTIVE certificate's id and PEM. AWS
// keeps the CSR's subject.
func (p *Provider) CreateCertificateFromCsr(ctx context.Context, csrPEM string) (certID, certPEM string, err error) {
	if csrPEM == "" {
		return "", "", errkind.New(errkind.Invalid, "create certificate from CSR: the CSR is empty")
	}
	out, err := p.iot.CreateCertificateFromCsr(ctx, &iot.CreateCertificateFromCsrInput{CertificateSigningRequest: &csrPEM, SetAsActive: true})
	if err != nil {
		return "", "", mapErr(err, "create certificate from CSR")
	}
	p.learnARN(out.CertificateArn)
	return sdkaws.ToString(out.CertificateId), sdkaws.ToString(out.CertificatePem), nil
}

// DeleteCertificate deletes a certificate: it is detached from its things
// and policies and deactivated first, as AWS requires. A missing
// certificate is not an error. Failed provisioning and enrollment use it to
// remove a certificate they made.
func (p *Provider) DeleteCertificate(ctx context.Context, certID string) error {
	arn, err := p.certARN(ctx, certID)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete certificate %s: %w", certID, err)
	}
	pg := iot.NewListPrincipalThingsPaginator(p.iot, &iot.ListPrincipalThingsInput{Principal: &arn})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if hasCode(err, notFoundCodes...) {
			return nil
		}
		if err != nil {
			return mapErr(err, "list things of certificate %s", certID)
		}
		for _, t := range out.Things {
			if _, err := p.iot.DetachThingPrincipal(ctx, &iot.DetachThingPrincipalInput{ThingName: &t, Principal: &arn}); err != nil && !hasCode(err, notFoundCodes...) {
				return mapErr(err, "detach certificate %s from thing %q", certID, t)
			}
		}
	}
	policies, err := p.attachedPolicies(ctx, arn)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete certificate %s: %w", certID, err)
	}
	for _, pol := range policies {
		if _, err := p.iot.DetachPolicy(ctx, &iot.DetachPolicyInput{PolicyName: &pol, Target: &arn}); err != nil && !hasCode(err, notFoundCodes...) {
			return mapErr(err, "detach policy %q from certificate %s", pol, certID)
		}
	}
	if _, err := p.iot.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: &certID, NewStatus: iottypes.CertificateStatusInactive}); err != nil {
		if hasCode(err, notFoundCodes...) {
			return nil
		}
		return mapErr(err, "deactivate certificate %s", certID)
	}
	// Detaching is eventually consistent in AWS: DeleteCertificate may
	// still see the attachment for a moment.
	err = retryWhile(ctx, func() error {
		_, err := p.iot.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: &certID})
		return err
	}, func(err error) bool { return hasCode(err, "DeleteConflictException") })
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "delete certificate %s", certID)
	}
	return nil
}
