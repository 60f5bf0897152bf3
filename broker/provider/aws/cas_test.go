package aws_test

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// TestRegisterCA registers a CA the way the broker does and checks that the
// fake then accepts certificates it signs, that a second call is a no-op,
// and that a CA deactivated in AWS IoT is reported, not re-activated.
func TestRegisterCA(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, nil)
	is := providertest.NewIssuer(t)

	if _, err := p.RegisterCertificate(ctx, is.Issue(t, "before"), is.CAPEM, "ACTIVE"); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("RegisterCertificate with an unregistered CA: err = %v, want Invalid (CertificateValidationException)", err)
	}
	if err := p.RegisterCA(ctx, testIssuer{is}, is.CAID(), is.CAPEM); err != nil {
		t.Fatal(err)
	}
	if st, ok := fake.CAStatus(is.CAPEM); !ok || st != "ACTIVE" {
		t.Fatalf("CA status = %q (registered %v), want ACTIVE", st, ok)
	}
	if _, err := p.RegisterCertificate(ctx, is.Issue(t, "after"), is.CAPEM, "ACTIVE"); err != nil {
		t.Fatalf("RegisterCertificate with the registered CA: %v", err)
	}

	if err := p.RegisterCA(ctx, testIssuer{is}, is.CAID(), is.CAPEM); err != nil {
		t.Fatalf("second RegisterCA: %v", err)
	}
	if n := fake.Calls("RegisterCACertificate"); n != 1 {
		t.Fatalf("RegisterCACertificate calls = %d, want 1 (the second RegisterCA finds it ACTIVE)", n)
	}

	fake.SetCAStatus(is.CAPEM, "INACTIVE")
	err := p.RegisterCA(ctx, testIssuer{is}, is.CAID(), is.CAPEM)
	if !errkind.Is(err, errkind.Conflict) || !strings.Contains(err.Error(), "update-ca-certificate") {
		t.Fatalf("RegisterCA of an INACTIVE CA: err = %v, want Conflict naming update-ca-certificate", err)
	}
	if st, _ := fake.CAStatus(is.CAPEM); st != "INACTIVE" {
		t.Fatalf("CA status = %q, want it left INACTIVE", st)
	}
	if _, err := p.RegisterCertificate(ctx, is.Issue(t, "inactive"), is.CAPEM, "ACTIVE"); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("RegisterCertificate with an INACTIVE CA: err = %v, want Conflict (CertificateStateException)", err)
	}
}

// TestRegisterCAConcurrent has replicas race to register one CA: all
// succeed and AWS keeps one registration.
func TestRegisterCAConcurrent(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, nil)
	is := providertest.NewIssuer(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.RegisterCA(ctx, testIssuer{is}, is.CAID(), is.CAPEM)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("RegisterCA %d: %v", i, err)
		}
	}
	if st, ok := fake.CAStatus(is.CAPEM); !ok || st != "ACTIVE" {
		t.Fatalf("CA status = %q (registered %v), want ACTIVE", st, ok)
	}
}

// wrongIssuer signs verification certificates with another CA's key.
type wrongIssuer struct{ other *providertest.Issuer }

func (w wrongIssuer) Issue(_ context.Context, _ string, pub crypto.PublicKey, subject pkix.Name, days int) (string, string, error) {
	c, err := w.other.Sign(pub, subject, days)
	return c, w.other.CAPEM, err
}

// TestRegisterCAWrongVerification: a verification certificate not signed
// by the CA's key is refused, and the CA stays unregistered.
func TestRegisterCAWrongVerification(t *testing.T) {
	ctx := context.Background()
	p, fake := newProvider(t, nil)
	is, other := providertest.NewIssuer(t), providertest.NewIssuer(t)
	err := p.RegisterCA(ctx, wrongIssuer{other}, is.CAID(), is.CAPEM)
	if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), "CertificateValidationException") {
		t.Fatalf("err = %v, want Invalid from CertificateValidationException", err)
	}
	if _, ok := fake.CAStatus(is.CAPEM); ok {
		t.Fatal("the CA was registered without proof of possession")
	}
}

// TestFakeRegisterCACertificateValidation checks the fake refuses what AWS
// refuses, with AWS's error codes.
func TestFakeRegisterCACertificateValidation(t *testing.T) {
	ctx := context.Background()
	_, fake := newProvider(t, nil)
	c := rawIoT(fake)
	out, err := c.GetRegistrationCode(ctx, &iot.GetRegistrationCodeInput{})
	if err != nil {
		t.Fatal(err)
	}
	code := *out.RegistrationCode
	is, other := providertest.NewIssuer(t), providertest.NewIssuer(t)
	verification := func(t *testing.T, signer *providertest.Issuer, cn string) string {
		t.Helper()
		key, err := certs.GenerateKey("")
		if err != nil {
			t.Fatal(err)
		}
		v, err := signer.Sign(key.Public(), pkix.Name{CommonName: cn}, 1)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name      string
		ca, verif string
		mode      iottypes.CertificateMode
		wantCode  string
	}{
		{name: "verification signed by another CA", ca: is.CAPEM, verif: verification(t, other, code), wantCode: "CertificateValidationException"},
		{name: "verification CN is not the registration code", ca: is.CAPEM, verif: verification(t, is, "not-the-code"), wantCode: "RegistrationCodeValidationException"},
		{name: "not a CA certificate", ca: is.Issue(t, "leaf"), verif: verification(t, is, code), wantCode: "CertificateValidationException"},
		{name: "no verification certificate in DEFAULT mode", ca: is.CAPEM, wantCode: "InvalidRequestException"},
		{name: "unknown certificate mode", ca: is.CAPEM, verif: verification(t, is, code), mode: "SOMETIMES", wantCode: "InvalidRequestException"},
		{name: "not PEM", ca: "garbage", verif: verification(t, is, code), wantCode: "CertificateValidationException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &iot.RegisterCACertificateInput{CaCertificate: &tt.ca, SetAsActive: true, CertificateMode: tt.mode}
			if tt.verif != "" {
				in.VerificationCertificate = &tt.verif
			}
			_, err := c.RegisterCACertificate(ctx, in)
			var ae smithy.APIError
			if err == nil || !errors.As(err, &ae) || ae.ErrorCode() != tt.wantCode {
				t.Fatalf("err = %v, want %s", err, tt.wantCode)
			}
		})
	}
	if _, ok := fake.CAStatus(is.CAPEM); ok {
		t.Fatal("a refused request registered the CA")
	}

	// The valid request, then the same CA again: ResourceAlreadyExists.
	valid := &iot.RegisterCACertificateInput{CaCertificate: &is.CAPEM, VerificationCertificate: ptr(verification(t, is, code)), CertificateMode: iottypes.CertificateModeDefault}
	reg, err := c.RegisterCACertificate(ctx, valid)
	if err != nil {
		t.Fatal(err)
	}
	if *reg.CertificateId != is.CAID() {
		t.Fatalf("certificateId = %s, want %s", *reg.CertificateId, is.CAID())
	}
	if st, _ := fake.CAStatus(is.CAPEM); st != "INACTIVE" {
		t.Fatalf("status = %q, want INACTIVE without setAsActive", st)
	}
	_, err = c.RegisterCACertificate(ctx, valid)
	var exists *iottypes.ResourceAlreadyExistsException
	if !errors.As(err, &exists) || exists.ResourceId == nil || *exists.ResourceId != is.CAID() {
		t.Fatalf("second registration: err = %v, want ResourceAlreadyExistsException naming the CA", err)
	}
	d, err := c.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: ptr(is.CAID())})
	if err != nil {
		t.Fatal(err)
	}
	if d.CertificateDescription.Status != iottypes.CACertificateStatusInactive || *d.CertificateDescription.CertificatePem != is.CAPEM {
		t.Fatalf("DescribeCACertificate = %+v", d.CertificateDescription)
	}
	var nf *iottypes.ResourceNotFoundException
	if _, err := c.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: ptr(other.CAID())}); !errors.As(err, &nf) {
		t.Fatalf("DescribeCACertificate of an unregistered CA: err = %v, want ResourceNotFoundException", err)
	}
}
