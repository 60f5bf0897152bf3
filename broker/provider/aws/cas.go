package aws

import (
	"context"
	"crypto/x509/pkix"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// verificationDays is the validity of the throw-away verification
// certificate that proves the broker holds a CA's key.
const verificationDays = 1

// RegisterCA makes sure the broker's CA certificate caPEM (id caID in the
// issuer, which holds its key) is registered ACTIVE in AWS IoT, so device
// certificates it signs can be registered with it (RegisterCertificate,
// RegisterThing with CACertificatePem).
//
// A CA not yet registered is registered in DEFAULT mode, active, without
// auto-registration: the provider gets the account's registration code and
// has the issuer sign a verification certificate whose common name is that
// code (the proof of possession of the CA key AWS asks for). A CA already
// ACTIVE is success, so RegisterCA is idempotent and safe for replicas to
// race. A CA registered but INACTIVE is left alone — deactivating a CA is
// how an operator stops its devices connecting — and reported as
// errkind.Conflict naming the command that activates it.
func (p *Provider) RegisterCA(ctx context.Context, issuer CertificateIssuer, caID, caPEM string) error {
	ca, err := certs.ParseCertificate(caPEM)
	if err != nil {
		return errkind.Wrap(errkind.Invalid, err, "register CA %s with AWS IoT: the CA certificate is not PEM", caID)
	}
	id := certs.ID(ca)
	registered, err := p.caActive(ctx, id)
	if err != nil || registered {
		return err
	}
	code, err := p.iot.GetRegistrationCode(ctx, &iot.GetRegistrationCodeInput{})
	if err != nil {
		return mapErr(err, "register CA %s with AWS IoT: get the registration code (iot:GetRegistrationCode)", id)
	}
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		return fmt.Errorf("register CA %s with AWS IoT: verification key: %w", id, err)
	}
	verification, _, err := issuer.Issue(ctx, caID, key.Public(), pkix.Name{CommonName: sdkaws.ToString(code.RegistrationCode)}, verificationDays)
	if err != nil {
		return fmt.Errorf("register CA %s with AWS IoT: sign the verification certificate: %w", id, err)
	}
	_, err = p.iot.RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{
		CaCertificate:           sdkaws.String(caPEM),
		VerificationCertificate: sdkaws.String(verification),
		CertificateMode:         types.CertificateModeDefault,
		SetAsActive:             true,
		AllowAutoRegistration:   false,
	})
	if hasCode(err, "ResourceAlreadyExistsException") {
		// Another replica registered it since caActive looked.
		_, err = p.caActive(ctx, id)
		return err
	}
	if err != nil {
		return mapErr(err, "register CA %s with AWS IoT (iot:RegisterCACertificate)", id)
	}
	p.log.Info("registered a certificate authority with AWS IoT", "caId", id, "subject", ca.Subject.String())
	return nil
}

// caActive reports whether the CA id is registered and ACTIVE: false with
// no error when it is not registered, errkind.Conflict when it is INACTIVE
// (or pending transfer).
func (p *Provider) caActive(ctx context.Context, id string) (bool, error) {
	out, err := p.iot.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: sdkaws.String(id)})
	if hasCode(err, "ResourceNotFoundException") {
		return false, nil
	}
	if err != nil {
		return false, mapErr(err, "register CA %s with AWS IoT: describe it (iot:DescribeCACertificate)", id)
	}
	if st := out.CertificateDescription.Status; st != types.CACertificateStatusActive {
		return false, errkind.New(errkind.Conflict,
			"CA %s is registered in AWS IoT with status %s, so devices it signs cannot be registered: activate it with "+
				"`aws iot update-ca-certificate --certificate-id %s --new-status ACTIVE`", id, st, id)
	}
	return true, nil
}
