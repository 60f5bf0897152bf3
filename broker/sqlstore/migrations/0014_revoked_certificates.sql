-- Device certificates that may no longer connect (their core was deleted),
-- kept after the registry forgot them so that the CRL written for an
-- external MQTT broker (--mqtt-crl-file) can still name them.
CREATE TABLE revoked_certificates (
    cert_id         TEXT PRIMARY KEY,
    ca_id           TEXT NOT NULL DEFAULT '',
    certificate_pem TEXT NOT NULL,
    revoked_at      BIGINT NOT NULL
);
