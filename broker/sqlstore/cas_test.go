package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

func caSecretsKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, ca.SecretsKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func caRecord(id string, def bool) ca.Record {
	return ca.Record{
		CA: ca.CA{
			ID: id, Subject: "CN=" + id, NotAfter: time.UnixMilli(2000000000000).UTC(), Default: def,
			KeyAlgorithm: certs.ECP256, CertificatePem: "-----BEGIN CERTIFICATE-----\n" + id + "\n-----END CERTIFICATE-----\n",
		},
		EncryptedKey: []byte{1, 2, 3, 0, 255, byte(len(id))},
		CreatedAt:    time.UnixMilli(1700000000123).UTC(),
	}
}

func TestCAStore(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)

	if _, err := db.DefaultCA(ctx); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("DefaultCA on an empty store = %v, want NotFound", err)
	}
	if _, err := db.GetCA(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetCA(nope) = %v, want NotFound", err)
	}
	if list, err := db.ListCAs(ctx); err != nil || len(list) != 0 {
		t.Fatalf("ListCAs on an empty store = %v, %v", list, err)
	}

	// InsertCA never stores a default, even when asked.
	b := caRecord("bbb", true)
	if err := db.InsertCA(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DefaultCA(ctx); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("InsertCA stored a default CA: %v", err)
	}
	if err := db.InsertCA(ctx, b); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("second InsertCA = %v, want Conflict", err)
	}

	def := caRecord("zzz", false)
	got, created, err := db.CreateDefaultCA(ctx, def)
	if err != nil || !created {
		t.Fatalf("CreateDefaultCA = %v, %v", created, err)
	}
	def.Default = true
	if !sameRecord(got, def) {
		t.Fatalf("CreateDefaultCA returned %+v, want %+v", got, def)
	}
	got, created, err = db.CreateDefaultCA(ctx, caRecord("other", true))
	if err != nil || created || got.ID != "zzz" {
		t.Fatalf("CreateDefaultCA with a default present = %+v, %v, %v", got, created, err)
	}

	stored, err := db.DefaultCA(ctx)
	if err != nil || !sameRecord(stored, def) {
		t.Fatalf("DefaultCA = %+v, %v; want %+v", stored, err, def)
	}
	b.Default = false
	if stored, err := db.GetCA(ctx, "bbb"); err != nil || !sameRecord(stored, b) {
		t.Fatalf("GetCA(bbb) = %+v, %v; want %+v", stored, err, b)
	}
	if err := db.InsertCA(ctx, caRecord("aaa", false)); err != nil {
		t.Fatal(err)
	}
	list, err := db.ListCAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range list {
		ids = append(ids, r.ID)
	}
	if strings.Join(ids, ",") != "zzz,aaa,bbb" {
		t.Fatalf("ListCAs order = %v, want the default first, then by subject", ids)
	}

	// The schema itself refuses a second default.
	_, err = db.sql.ExecContext(ctx, `UPDATE certificate_authorities SET is_default = 1 WHERE id = 'aaa'`)
	if err == nil || !errkind.Is(mapErr(err, "x"), errkind.Conflict) {
		t.Fatalf("a second default row was accepted: %v", err)
	}
}

func sameRecord(a, b ca.Record) bool {
	return a.CA == b.CA && string(a.EncryptedKey) == string(b.EncryptedKey) && a.CreatedAt.Equal(b.CreatedAt)
}

// TestCAAuthorityOnSQLite runs the real Authority on the database: the key
// is stored encrypted, and a second process with the same file and secrets
// key reuses the default CA.
func TestCAAuthorityOnSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	db := openTestDB(t, path)
	key := caSecretsKey(t)
	auth := ca.New(ca.Config{Store: db, SecretsKey: key})
	def, created, err := auth.Init(ctx)
	if err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	imported := importableCA(t)
	if _, err := auth.Import(ctx, imported.cert, imported.key); err != nil {
		t.Fatal(err)
	}

	rows, err := db.sql.QueryContext(ctx, `SELECT encrypted_key FROM certificate_authorities`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var blob string
		if err := rows.Scan(&blob); err != nil {
			t.Fatal(err)
		}
		n++
		if strings.Contains(blob, "PRIVATE KEY") || strings.Contains(blob, pemBase64(imported.key)) {
			t.Error("a CA key is stored in plaintext")
		}
	}
	rows.Close()
	if n != 2 {
		t.Fatalf("%d CA rows, want 2", n)
	}

	// A second process: same file, same secrets key.
	db2 := openTestDB(t, path)
	again, created, err := ca.New(ca.Config{Store: db2, SecretsKey: key}).Init(ctx)
	if err != nil || created || again.ID != def.ID {
		t.Fatalf("second process Init = %+v, %v, %v", again, created, err)
	}
	dev, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.New(ca.Config{Store: db2, SecretsKey: key}).Issue(ctx, "", dev.Public(), pkix.Name{CommonName: "core-1"}, 0); err != nil {
		t.Fatalf("Issue from the second process: %v", err)
	}
	// A process with another secrets key fails clearly.
	if _, _, err := ca.New(ca.Config{Store: db2, SecretsKey: caSecretsKey(t)}).Init(ctx); err == nil || !strings.Contains(err.Error(), "secrets key does not match") {
		t.Fatalf("Init with another secrets key = %v", err)
	}
}

// TestCAInitRace starts several "replicas", each with its own connection to
// one database file, and checks that they agree on one default CA.
func TestCAInitRace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	openTestDB(t, path)
	key := caSecretsKey(t)
	const n = 4
	dbs := make([]*DB, n)
	for i := range dbs {
		dbs[i] = openTestDB(t, path)
	}
	var (
		mu      sync.Mutex
		ids     = map[string]bool{}
		created int
		wg      sync.WaitGroup
	)
	for _, db := range dbs {
		wg.Go(func() {
			def, c, err := ca.New(ca.Config{Store: db, SecretsKey: key}).Init(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[def.ID] = true
			if c {
				created++
			}
		})
	}
	wg.Wait()
	if created != 1 || len(ids) != 1 {
		t.Fatalf("%d replicas created a default CA and they saw %d distinct ones; want 1 and 1", created, len(ids))
	}
}

type pemPair struct{ cert, key string }

// importableCA makes an RSA CA certificate and its key, as an operator
// would hold them for import.
func importableCA(t *testing.T) pemPair {
	t.Helper()
	key, err := certs.GenerateKey(certs.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "operator CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{cert: certs.EncodeCertificate(der), key: keyPEM}
}

// pemBase64 returns the first base64 line of a PEM body.
func pemBase64(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) < 2 {
		return s
	}
	return lines[1]
}
