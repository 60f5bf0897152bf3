package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	taskIDRE = regexp.MustCompile(`^[A-Za-z0-9_\-]{9}$`)
	tsRE     = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
)

// createCores submits a core Create task and returns its id.
func (b *broker) createCores(cores ...map[string]any) string {
	b.t.Helper()
	r := b.must(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Create", "cores": cores})
	id := r.Header.Get("x-taskid")
	if !taskIDRE.MatchString(id) {
		b.t.Fatalf("x-taskid %q does not match %s", id, taskIDRE)
	}
	if loc := r.Header.Get("location"); loc != "/coreTasks/"+id {
		b.t.Fatalf("location = %q", loc)
	}
	if len(r.Body) != 0 {
		b.t.Fatalf("202 body should be empty, got %s", r.Body)
	}
	return id
}

func core(name string, extra ...string) map[string]any {
	c := map[string]any{"name": name, "provisioningTemplate": "ggfleet-core",
		"provisioningParameters": map[string]string{"ThingName": name}}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i]] = extra[i+1]
	}
	return c
}

// certsZip downloads and opens a certs.zip artifact.
func (b *broker) certsZip(name string) map[string]string {
	b.t.Helper()
	r := b.must(200, "GET", "/artifacts/greengrass2/artifacts/"+name+"/"+name+"/certs.zip", nil)
	zr, err := zip.NewReader(bytes.NewReader(r.Body), int64(len(r.Body)))
	if err != nil {
		b.t.Fatalf("certs.zip of %s: %v", name, err)
	}
	files := map[string]string{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			b.t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(rc)
		rc.Close()
		files[f.Name] = buf.String()
	}
	return files
}

func certID(t *testing.T, pemText string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		t.Fatalf("no PEM in %q", pemText)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

type thingView struct {
	ThingName   string            `json:"thingName"`
	ThingGroups []string          `json:"thingGroups"`
	Attributes  map[string]string `json:"attributes"`
	Principals  []string          `json:"principals"`
	Policies    []string          `json:"policies"`
}

func TestTemplatesLifecycle(t *testing.T) {
	b := startBroker(t)
	r := b.must(201, "POST", "/templates", map[string]any{"name": "IntegrationTest",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if r.Header.Get("location") != "/templates/IntegrationTest" || r.Header.Get("x-name") != "IntegrationTest" || r.Header.Get("x-version") != "1" {
		t.Fatalf("create headers: %v", r.Header)
	}
	b.must(409, "POST", "/templates", map[string]any{"name": "IntegrationTest",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})

	var v1 map[string]any
	b.must(200, "GET", "/templates/IntegrationTest", nil).JSON(t, &v1)
	if v1["version"] != float64(1) || v1["updatedAt"] != nil || !tsRE.MatchString(fmt.Sprint(v1["createdAt"])) {
		t.Fatalf("v1 = %v", v1)
	}
	r = b.must(204, "PUT", "/templates/IntegrationTest", map[string]any{"components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"}, {"key": "aws.greengrass.clientdevices.IPDetector", "version": "2.1.1"}}})
	if r.Header.Get("x-version") != "2" {
		t.Fatalf("PUT x-version = %q, want 2", r.Header.Get("x-version"))
	}
	var v2 map[string]any
	b.must(200, "GET", "/templates/IntegrationTest", nil).JSON(t, &v2)
	if v2["version"] != float64(2) || v2["createdAt"] != v1["createdAt"] || v2["updatedAt"] == nil {
		t.Fatalf("v2 = %v", v2)
	}
	if comps := v2["components"].([]any); len(comps) != 2 {
		t.Fatalf("v2 components = %v", comps)
	}
	var versions struct {
		Templates []map[string]any `json:"templates"`
	}
	b.must(200, "GET", "/templates/IntegrationTest/versions", nil).JSON(t, &versions)
	if len(versions.Templates) != 2 || versions.Templates[0]["version"] != float64(1) {
		t.Fatalf("versions = %v", versions.Templates)
	}
	b.must(200, "GET", "/templates/IntegrationTest/versions/1", nil)
	b.must(404, "GET", "/templates/IntegrationTest/versions/7", nil)
	// Component versions are strings on the wire.
	if r := b.do("POST", "/templates", `{"name":"bad","components":[{"key":"a.b","version":1}]}`); r.Status != 400 || r.Message() == "" {
		t.Fatalf("numeric version: %d %s", r.Status, r.Body)
	}
	b.must(204, "DELETE", "/templates/IntegrationTest", nil)
	b.must(404, "GET", "/templates/IntegrationTest", nil)
	b.must(204, "DELETE", "/templates/never-existed", nil)
}

func TestCoreTaskTwoCores(t *testing.T) {
	b := startBroker(t)
	id := b.createCores(core("core-1", "configFileGenerator", "MANUAL_INSTALL"), core("core-2"))
	task := b.waitTask("/coreTasks/"+id, 2*time.Minute)
	if task["taskStatus"] != "Success" {
		t.Fatalf("task = %v", task)
	}
	for _, c := range task["cores"].([]any) {
		item := c.(map[string]any)
		if item["taskStatus"] != "Success" || !tsRE.MatchString(fmt.Sprint(item["updatedAt"])) {
			t.Fatalf("item = %v", item)
		}
	}
	// YAML only for the first core.
	r := b.must(200, "GET", "/artifacts/greengrass2/artifacts/core-1/core-1/installerConfig.yml", nil)
	var cfg map[string]any
	if err := yaml.Unmarshal(r.Body, &cfg); err != nil {
		t.Fatalf("installer config: %v\n%s", err, r.Body)
	}
	if cfg["system"].(map[string]any)["thingName"] != "core-1" {
		t.Fatalf("system.thingName: %v", cfg)
	}
	if v := cfg["services"].(map[string]any)["aws.greengrass.Nucleus"].(map[string]any)["version"]; v != "2.5.0" {
		t.Fatalf("nucleus version = %v", v)
	}
	b.must(404, "GET", "/artifacts/greengrass2/artifacts/core-2/core-2/installerConfig.yml", nil)

	for _, name := range []string{"core-1", "core-2"} {
		files := b.certsZip(name)
		for _, f := range []string{"certs/cert.pem", "certs/private.key", "certs/root.ca.pem"} {
			if files[f] == "" {
				t.Fatalf("%s certs.zip lacks %s: %v", name, f, keys(files))
			}
		}
		var th thingView
		b.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
		if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) {
			t.Fatalf("%s principals %v do not match certs.zip", name, th.Principals)
		}
		if len(th.Policies) == 0 {
			t.Fatalf("%s has no policies: %+v", name, th)
		}
		var c map[string]any
		b.must(200, "GET", "/cores/"+name, nil).JSON(t, &c)
		dev := c["device"].(map[string]any)
		if dev["status"] != "UNKNOWN" {
			t.Fatalf("device.status before enrollment = %v", dev["status"])
		}
		tmpl := c["template"].(map[string]any)
		if fmt.Sprint(tmpl["desired"]) != "map[name:None version:0]" {
			t.Fatalf("template = %v", tmpl)
		}
		arts := c["artifacts"].(map[string]any)
		if _, ok := arts["certs"]; !ok {
			t.Fatalf("artifacts = %v", arts)
		}
		if _, ok := arts["config"]; ok != (name == "core-1") {
			t.Fatalf("%s config artifact presence wrong: %v", name, arts)
		}
	}
	var list struct {
		Tasks []map[string]any `json:"tasks"`
	}
	b.must(200, "GET", "/coreTasks", nil).JSON(t, &list)
	if len(list.Tasks) != 1 {
		t.Fatalf("tasks = %v", list.Tasks)
	}
	b.must(200, "GET", "/cores/core-1/coreTasks/"+id, nil)
	b.must(404, "GET", "/cores/core-9/coreTasks/"+id, nil)
}

func TestInvalidProvisioningTemplateFailsItem(t *testing.T) {
	b := startBroker(t)
	id := b.createCores(core("good-1"), map[string]any{"name": "bad-1", "provisioningTemplate": "no-such-template"})
	task := b.waitTask("/coreTasks/"+id, 2*time.Minute)
	if task["taskStatus"] != "Failure" {
		t.Fatalf("task = %v", task)
	}
	for _, c := range task["cores"].([]any) {
		item := c.(map[string]any)
		want := "Success"
		if item["name"] == "bad-1" {
			want = "Failure"
			if !strings.HasPrefix(fmt.Sprint(item["statusMessage"]), "Failed provisioning:") {
				t.Fatalf("statusMessage = %v", item["statusMessage"])
			}
		}
		if item["taskStatus"] != want {
			t.Fatalf("item = %v", item)
		}
	}
	b.must(404, "GET", "/registry/things/bad-1", nil)
}

// enroll makes a device key, asks for a token and enrolls with a CSR only.
func (b *broker) enroll(coreName string) (certPEM string) {
	b.t.Helper()
	var tok struct {
		Token    string `json:"token"`
		CoreName string `json:"coreName"`
	}
	b.must(201, "POST", "/cores/"+coreName+"/enrollmentTokens", map[string]any{}).JSON(b.t, &tok)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: coreName}}, key)
	if err != nil {
		b.t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	body := map[string]any{"coreName": coreName, "token": tok.Token, "csrPem": csr}
	r := b.doWith("POST", "/enroll", body, nil)
	if r.Status != 200 {
		b.t.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	var resp map[string]any
	r.JSON(b.t, &resp)
	for _, f := range []string{"thingName", "certificatePem", "caCertificatePem", "serverCaCertificatePem", "installerConfig", "mqttEndpoint", "brokerUrl", "mode"} {
		if _, ok := resp[f]; !ok {
			b.t.Fatalf("enroll response lacks %s: %v", f, resp)
		}
	}
	if strings.Contains(string(r.Body), "PRIVATE KEY") {
		b.t.Fatal("enroll response carries a private key")
	}
	cert, _ := pem.Decode([]byte(resp["certificatePem"].(string)))
	c, err := x509.ParseCertificate(cert.Bytes)
	if err != nil {
		b.t.Fatal(err)
	}
	if c.Subject.CommonName != coreName || !c.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		b.t.Fatalf("issued certificate: CN %q, key matches %v", c.Subject.CommonName, c.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey))
	}
	// The token works once.
	if r := b.doWith("POST", "/enroll", body, nil); r.Status != 401 || !strings.Contains(r.Message(), "used") {
		b.t.Fatalf("second enroll: %d %s", r.Status, r.Body)
	}
	return resp["certificatePem"].(string)
}

func TestEnrollmentAndClientDevices(t *testing.T) {
	b := startBroker(t)
	id := b.createCores(core("core-a"), core("core-b"))
	if task := b.waitTask("/coreTasks/"+id, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("task = %v", task)
	}
	devTask := map[string]any{"type": "Create", "devices": []map[string]any{
		{"name": "dev-1", "provisioningTemplate": "ggfleet-client-device", "provisioningParameters": map[string]string{"ThingName": "dev-1"}},
		{"name": "dev-2", "provisioningTemplate": "ggfleet-client-device", "provisioningParameters": map[string]string{"ThingName": "dev-2"}},
	}}
	// Unknown core and never-enrolled core: 400 with a message.
	for _, c := range []string{"no-such-core", "core-b"} {
		if r := b.do("POST", "/cores/"+c+"/deviceTasks", devTask); r.Status != 400 || r.Message() == "" {
			t.Fatalf("device task for %s: %d %s", c, r.Status, r.Body)
		}
	}
	b.must(404, "POST", "/cores/no-such-core/enrollmentTokens", map[string]any{})

	certPEM := b.enroll("core-a")
	var th thingView
	b.must(200, "GET", "/registry/things/core-a", nil).JSON(t, &th)
	if len(th.Principals) != 2 || !contains(th.Principals, certID(t, certPEM)) {
		t.Fatalf("core-a principals after enroll = %v", th.Principals)
	}

	r := b.must(202, "POST", "/cores/core-a/deviceTasks", devTask)
	dt := b.waitTask("/deviceTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	if dt["taskStatus"] != "Success" || dt["coreName"] != "core-a" {
		t.Fatalf("device task = %v", dt)
	}
	var assoc struct {
		AssociatedClientDevices []map[string]any `json:"associatedClientDevices"`
	}
	b.must(200, "GET", "/registry/coreDevices/core-a/associatedClientDevices", nil).JSON(t, &assoc)
	if len(assoc.AssociatedClientDevices) != 2 {
		t.Fatalf("associations = %v", assoc)
	}
	var dev map[string]any
	b.must(200, "GET", "/devices/dev-1", nil).JSON(t, &dev)
	if dev["coreName"] != "core-a" {
		t.Fatalf("device = %v", dev)
	}
	files := b.certsZip("dev-1")
	if files["certs/cert.pem"] == "" {
		t.Fatalf("dev-1 certs.zip = %v", keys(files))
	}
	var devs struct {
		Devices []map[string]any `json:"devices"`
	}
	b.must(200, "GET", "/devices?coreName=core-a", nil).JSON(t, &devs)
	if len(devs.Devices) != 2 {
		t.Fatalf("devices = %v", devs)
	}

	// DELETE /devices with defaults deprovisions and disassociates.
	b.must(204, "DELETE", "/devices/dev-1", nil)
	b.must(404, "GET", "/devices/dev-1", nil)
	b.must(404, "GET", "/registry/things/dev-1", nil)
	b.must(200, "GET", "/registry/coreDevices/core-a/associatedClientDevices", nil).JSON(t, &assoc)
	if len(assoc.AssociatedClientDevices) != 1 {
		t.Fatalf("associations after delete = %v", assoc)
	}
	b.must(404, "DELETE", "/devices/dev-1", nil)

	// Core delete with deprovisioning removes the core, its devices and things.
	r = b.must(202, "POST", "/coreTasks", map[string]any{"coreVersion": "2.5.0", "type": "Delete",
		"options": map[string]any{"deprovisionCores": true, "deprovisionClientDevices": true},
		"cores":   []map[string]any{{"name": "core-a", "provisioningTemplate": "UNUSED"}}})
	task := b.waitTask("/coreTasks/"+r.Header.Get("x-taskid"), 2*time.Minute)
	if task["taskStatus"] != "Success" || task["options"] == nil {
		t.Fatalf("delete task = %v", task)
	}
	b.must(404, "GET", "/cores/core-a", nil)
	b.must(404, "GET", "/devices/dev-2", nil)
	b.must(404, "GET", "/registry/things/core-a", nil)
	b.must(404, "GET", "/registry/things/dev-2", nil)
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
