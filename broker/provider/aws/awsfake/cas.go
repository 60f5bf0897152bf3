package awsfake

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// caRegistry is the account's registered CA certificates and its
// registration code (GetRegistrationCode), as AWS IoT keeps them.
type caRegistry struct {
	code string             // made at the first GetRegistrationCode
	cas  map[string]*caCert // by certificate id
}

// caCert is a CA certificate registered with RegisterCACertificate.
type caCert struct {
	id, pem, status string
	created         time.Time
}

// CAStatus reports whether the CA certificate caPEM is registered and its
// status (ACTIVE or INACTIVE), for tests that check what the broker did.
func (f *Fake) CAStatus(caPEM string) (string, bool) {
	c, err := parsePEM(caPEM)
	if err != nil {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ca := f.cas.cas[certID(c)]
	if ca == nil {
		return "", false
	}
	return ca.status, true
}

// SetCAStatus sets a registered CA's status, as an operator would with
// aws iot update-ca-certificate; false if caPEM is not registered.
func (f *Fake) SetCAStatus(caPEM, status string) bool {
	c, err := parsePEM(caPEM)
	if err != nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ca := f.cas.cas[certID(c)]
	if ca == nil {
		return false
	}
	ca.status = status
	return true
}

// registrationCodeLocked returns the account's registration code, making
// it on first use. Callers hold f.mu.
func (f *Fake) registrationCodeLocked() string {
	if f.cas.code == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		f.cas.code = hex.EncodeToString(b)
	}
	return f.cas.code
}

func (f *Fake) getRegistrationCode(r *http.Request) (int, any, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return http.StatusOK, map[string]any{"registrationCode": f.registrationCodeLocked()}, nil
}

// registerCACertificate is RegisterCACertificate in DEFAULT mode: the
// verification certificate must be signed by the CA's key and carry the
// account's registration code as its common name.
func (f *Fake) registerCACertificate(r *http.Request) (int, any, *apiError) {
	var in struct {
		CACertificate           string `json:"caCertificate"`
		VerificationCertificate string `json:"verificationCertificate"`
		CertificateMode         string `json:"certificateMode"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.CACertificate == "" || len(in.CACertificate) > 65536 {
		return 0, nil, invalid("1 validation error detected: Value at 'caCertificate' failed to satisfy constraint: Member must have length between 1 and 65536")
	}
	mode := in.CertificateMode
	if mode == "" {
		mode = "DEFAULT"
	}
	if mode != "DEFAULT" && mode != "SNI_ONLY" {
		return 0, nil, invalid("1 validation error detected: Value '%s' at 'certificateMode' failed to satisfy constraint: Member must satisfy enum value set: [DEFAULT, SNI_ONLY]", mode)
	}
	if mode == "DEFAULT" && in.VerificationCertificate == "" {
		return 0, nil, invalid("verificationCertificate is required when certificateMode is DEFAULT")
	}
	if len(in.VerificationCertificate) > 65536 {
		return 0, nil, invalid("1 validation error detected: Value at 'verificationCertificate' failed to satisfy constraint: Member must have length less than or equal to 65536")
	}
	q := r.URL.Query()
	for _, name := range []string{"setAsActive", "allowAutoRegistration"} {
		if v := q.Get(name); v != "" && v != "true" && v != "false" {
			return 0, nil, invalid("%s must be true or false, got %q", name, v)
		}
	}
	ca, err := parsePEM(in.CACertificate)
	if err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The CA certificate is not valid: %v", err)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The certificate is not a CA certificate: basic constraints CA:TRUE is required")
	}
	if time.Now().After(ca.NotAfter) {
		return 0, nil, errorf(http.StatusBadRequest, "CertificateValidationException", "The CA certificate has expired")
	}
	id := certID(ca)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cas.cas[id] != nil {
		e := errorf(http.StatusConflict, "ResourceAlreadyExistsException", "The certificate is already provisioned or registered")
		e.Extra = map[string]any{"resourceId": id, "resourceArn": arn("cacert/" + id)}
		return 0, nil, e
	}
	if mode == "DEFAULT" {
		if aerr := f.checkVerificationLocked(ca, in.VerificationCertificate); aerr != nil {
			return 0, nil, aerr
		}
	}
	status := "INACTIVE"
	if q.Get("setAsActive") == "true" {
		status = "ACTIVE"
	}
	if f.cas.cas == nil {
		f.cas.cas = map[string]*caCert{}
	}
	f.cas.cas[id] = &caCert{id: id, pem: in.CACertificate, status: status, created: time.Now()}
	return http.StatusOK, map[string]any{"certificateId": id, "certificateArn": arn("cacert/" + id)}, nil
}

// checkVerificationLocked checks the proof of possession of the CA key.
// Callers hold f.mu.
func (f *Fake) checkVerificationLocked(ca *x509.Certificate, verificationPEM string) *apiError {
	v, err := parsePEM(verificationPEM)
	if err != nil {
		return errorf(http.StatusBadRequest, "CertificateValidationException", "The verification certificate is not valid: %v", err)
	}
	if err := v.CheckSignatureFrom(ca); err != nil {
		return errorf(http.StatusBadRequest, "CertificateValidationException", "The verification certificate is not signed by the CA certificate: %v", err)
	}
	if now := time.Now(); now.Before(v.NotBefore) || now.After(v.NotAfter) {
		return errorf(http.StatusBadRequest, "CertificateValidationException", "The verification certificate is not valid now")
	}
	if f.cas.code == "" || v.Subject.CommonName != f.cas.code {
		return errorf(http.StatusBadRequest, "RegistrationCodeValidationException", "The verification certificate's common name is not this account's registration code")
	}
	return nil
}

func (f *Fake) describeCACertificate(r *http.Request) (int, any, *apiError) {
	id := r.PathValue("certificateId")
	if err := checkCertID(id); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ca := f.cas.cas[strings.ToLower(strings.TrimPrefix(id, "0x"))]
	if ca == nil {
		return 0, nil, notFound("The CA certificate %s does not exist", id)
	}
	return http.StatusOK, map[string]any{"certificateDescription": map[string]any{
		"certificateId": ca.id, "certificateArn": arn("cacert/" + ca.id), "status": ca.status,
		"certificatePem": ca.pem, "ownedBy": Account, "creationDate": epoch(ca.created),
		"lastModifiedDate": epoch(ca.created), "autoRegistrationStatus": "DISABLE", "certificateMode": "DEFAULT",
	}}, nil
}

// checkIssuerLocked is what AWS checks of a device certificate registered
// with its CA (RegisterCertificate, RegisterThing): the CA must be
// registered in the account and ACTIVE. Callers hold f.mu.
func (f *Fake) checkIssuerLocked(caID string) *apiError {
	ca := f.cas.cas[caID]
	if ca == nil {
		return errorf(http.StatusBadRequest, "CertificateValidationException", "The CA certificate %s is not registered in this account: register it with RegisterCACertificate first", caID)
	}
	if ca.status != "ACTIVE" {
		return errorf(http.StatusBadRequest, "CertificateStateException", "The CA certificate %s is %s", caID, ca.status)
	}
	return nil
}
