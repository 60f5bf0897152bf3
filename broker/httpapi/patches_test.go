package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

type patchTestPub struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (p *patchTestPub) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.HasSuffix(suffix, "/start") {
		p.msgs = append(p.msgs, payload)
	}
	return nil
}

type patchTestBlobs struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (b *patchTestBlobs) PutArtifact(ctx context.Context, key, ct string, data []byte) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[key] = data
	return "local", nil
}

func (b *patchTestBlobs) GetArtifact(ctx context.Context, key string) ([]byte, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.m[key]
	if !ok {
		return nil, "", errkind.New(errkind.NotFound, "no artifact %s", key)
	}
	return d, "", nil
}

type patchFixture struct {
	t   *testing.T
	svc *patches.Service
	pub *patchTestPub
	srv *httptest.Server
}

func newPatchFixture(t *testing.T) *patchFixture {
	t.Helper()
	f := &patchFixture{t: t, pub: &patchTestPub{}}
	f.svc = patches.New(patches.Config{Store: sqlstoretest.Open(t), Publisher: f.pub, Blobs: &patchTestBlobs{m: map[string][]byte{}},
		URLKey: []byte("0123456789abcdef0123456789abcdef"), BaseURL: "http://placeholder"})
	f.srv = httptest.NewServer(New(Deps{Auth: tokenAuth("tok"), Patches: f.svc}).Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *patchFixture) do(method, path, body string) (int, http.Header, string) {
	f.t.Helper()
	return doAPI(f.t, f.srv.URL, "tok", method, path, body, "")
}

// expect checks a status and that the body contains want.
func (f *patchFixture) expect(method, path, body string, status int, want string) string {
	f.t.Helper()
	code, _, got := f.do(method, path, body)
	if code != status || !strings.Contains(got, want) {
		f.t.Fatalf("%s %s: %d %s, want %d containing %q", method, path, code, got, status, want)
	}
	return got
}

func TestPatchTemplatesAPI(t *testing.T) {
	f := newPatchFixture(t)
	tpl := `{"name":"t1","patchType":"agentless","extraVars":{"a":"1"},"steps":[{"name":"s","run":"true"}]}`
	f.expect("POST", "/patchTemplates", tpl, http.StatusNoContent, "")
	f.expect("POST", "/patchTemplates", tpl, http.StatusConflict, "already exists")
	f.expect("POST", "/patchTemplates", `{"name":"bad","patchType":"x","steps":[{"name":"s","run":"a"},{"name":"s","run":"b"}]}`,
		http.StatusBadRequest, "step names must be unique")
	f.expect("POST", "/patchTemplates", `{"name":"bad","patchType":"x","extraVars":"a=b","steps":[{"name":"s","run":"a"}]}`,
		http.StatusBadRequest, `"message":"extraVars must be an object`)
	f.expect("POST", "/patchTemplates", `{"name":"cdf","patchType":"agentbased","playbookName":"p.yml","playbookFileContents":"LS0tCg=="}`, http.StatusNoContent, "")
	got := f.expect("GET", "/patchTemplates/cdf", "", http.StatusOK, `"playbookSource":{"bucket":"local","key":"patches/blobs/`)
	if strings.Contains(got, "playbookFileContents") {
		t.Errorf("the playbook bytes are returned: %s", got)
	}
	f.expect("PATCH", "/patchTemplates/t1", `{"enabled":false,"extraVars":{"b":"2"}}`, http.StatusNoContent, "")
	f.expect("PATCH", "/patchTemplates/t1", `{}`, http.StatusBadRequest, "changes nothing")
	f.expect("PATCH", "/patchTemplates/nope", `{"enabled":false}`, http.StatusNotFound, "not found")
	f.expect("GET", "/patchTemplates/t1", "", http.StatusOK, `"versionNo":2`)
	got = f.expect("GET", "/patchTemplates/t1?versionNo=1", "", http.StatusOK, `"versionNo":1`)
	if !strings.Contains(got, `"enabled":true`) {
		t.Errorf("version 1 changed: %s", got)
	}
	f.expect("GET", "/patchTemplates/t1?versionNo=x", "", http.StatusBadRequest, "versionNo must be")
	f.expect("GET", "/patchTemplates/t1?versionNo=9", "", http.StatusNotFound, "no version 9")

	// Pagination: count is a number, lastEvaluated.name the cursor.
	var page struct {
		Templates  []patches.Template
		Pagination struct {
			Count         int
			LastEvaluated map[string]string
		}
	}
	body := f.expect("GET", "/patchTemplates?count=1", "", http.StatusOK, `"count":1`)
	_ = json.Unmarshal([]byte(body), &page)
	if len(page.Templates) != 1 || page.Templates[0].Name != "cdf" || page.Pagination.LastEvaluated["name"] != "cdf" {
		t.Fatalf("first page: %s", body)
	}
	body = f.expect("GET", "/patchTemplates?count=1&exclusiveStartName=cdf", "", http.StatusOK, `"name":"t1"`)
	if strings.Contains(body, "lastEvaluated") {
		t.Errorf("the last page says more follow: %s", body)
	}
	f.expect("GET", "/patchTemplates", "", http.StatusOK, `{"templates":[`)

	f.expect("PUT", "/patchTemplates/t1/artifacts/tool.bin", "bytes", http.StatusOK, `"sha256":"`)
	f.expect("PUT", "/patchTemplates/t1/artifacts/a%20b", "bytes", http.StatusBadRequest, "artifact name")
	f.expect("PUT", "/patchTemplates/nope/artifacts/a", "bytes", http.StatusNotFound, "not found")
	f.expect("DELETE", "/patchTemplates/t1", "", http.StatusNoContent, "")
	f.expect("DELETE", "/patchTemplates/t1", "", http.StatusNotFound, "not found")
}

func TestTargetsAPI(t *testing.T) {
	f := newPatchFixture(t)
	ssh := `{"coreName":"core1","connection":{"type":"ssh","host":"192.0.2.7","port":22,"username":"root","hostKeyPolicy":"tofu","auth":{"method":"privateKey","credentialRef":"core:k"}}}`
	f.expect("PUT", "/targets/dev1", ssh, http.StatusOK, `"port":22`)
	f.expect("PUT", "/targets/dev2", `{"coreName":"core2","connection":{"type":"serial","port":"/dev/ttyUSB0"}}`, http.StatusOK, `"port":"/dev/ttyUSB0"`)
	f.expect("PUT", "/targets/dev3", `{"coreName":"core1","connection":{"type":"ssh","host":"h","username":"u","auth":{"method":"password","password":"hunter2"}}}`,
		http.StatusBadRequest, "connection.auth.password looks like a secret")
	f.expect("PUT", "/targets/dev3", `{"coreName":"core1","connection":{"type":"telnet"}}`, http.StatusBadRequest, "connection.type must be ssh or serial")
	f.expect("PUT", "/targets/dev3", `{"deviceId":"other","coreName":"core1","connection":{"type":"serial","port":"/dev/x"}}`, http.StatusBadRequest, "differs")
	f.expect("GET", "/targets?coreName=core1", "", http.StatusOK, `"deviceId":"dev1"`)
	if body := f.expect("GET", "/targets?coreName=core2", "", http.StatusOK, `"deviceId":"dev2"`); strings.Contains(body, "dev1") {
		t.Errorf("coreName filter: %s", body)
	}
	f.expect("POST", "/targets/dev1/probe", "", http.StatusAccepted, `"status":"requested"`)
	f.expect("GET", "/targets/dev1", "", http.StatusOK, `"lastProbe":{"probeId"`)
	f.expect("POST", "/targets/nope/probe", "", http.StatusNotFound, "PUT /targets/nope")
	f.expect("DELETE", "/targets/dev2", "", http.StatusNoContent, "")
	f.expect("GET", "/targets/dev2", "", http.StatusNotFound, "not found")
	for _, p := range []string{"POST /activations", "GET /activations/a1102421-922f-46d5-9a85-bdbad8d90d6c", "DELETE /activations/x"} {
		method, path, _ := strings.Cut(p, " ")
		body := ""
		if method == "POST" {
			body = `{"deviceId":"dev1"}`
		}
		f.expect(method, path, body, http.StatusNotFound, "PUT /targets/{deviceId}")
	}
}

func TestPatchTasksAPI(t *testing.T) {
	f := newPatchFixture(t)
	ctx := context.Background()
	f.expect("POST", "/patchTemplates", `{"name":"t1","patchType":"agentless","steps":[{"name":"s","run":"true"}]}`, http.StatusNoContent, "")
	f.expect("PUT", "/targets/dev1", `{"coreName":"core1","connection":{"type":"serial","port":"/dev/ttyUSB0"}}`, http.StatusOK, "")

	f.expect("POST", "/patchTasks", `{"patches":[]}`, http.StatusBadRequest, "patches is required")
	f.expect("POST", "/patchTasks", `{"patches":[{"deviceId":"dev1"}]}`, http.StatusBadRequest, "patches[0].patchTemplateName is required")
	f.expect("POST", "/patchTasks", `{"patches":[{"deviceId":"dev1","patchTemplateName":"t1"}],"maxFailures":-1}`, http.StatusBadRequest, "maxFailures")
	code, h, body := f.do("POST", "/patchTasks", `{"patches":[{"deviceId":"dev1","patchTemplateName":"t1","extraVars":{"v":"1"}},{"deviceId":"dev2","patchTemplateName":"t1"}],"options":{"maxConcurrency":5}}`)
	if code != http.StatusAccepted || body != "" {
		t.Fatalf("create task: %d %s", code, body)
	}
	taskID := h.Get("X-Taskid")
	if taskID == "" || h.Get("Location") != "/patchTasks/"+taskID {
		t.Fatalf("headers: %v", h)
	}
	if err := f.svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	f.expect("GET", "/patchTasks/"+taskID, "", http.StatusOK, `"maxConcurrency":5`)
	f.expect("GET", "/patchTasks/nope", "", http.StatusNotFound, "not found")
	f.expect("GET", "/patchTasks/nope/patches", "", http.StatusNotFound, "not found")

	var list struct {
		Patches    []patches.Patch
		Pagination struct {
			Count         int
			LastEvaluated map[string]string
		}
	}
	body = f.expect("GET", "/patchTasks/"+taskID+"/patches?count=1", "", http.StatusOK, `"associationId":null`)
	_ = json.Unmarshal([]byte(body), &list)
	if len(list.Patches) != 1 || list.Pagination.Count != 1 || list.Pagination.LastEvaluated["nextToken"] == "" {
		t.Fatalf("first page: %s", body)
	}
	sent := list.Patches[0]
	body = f.expect("GET", "/patchTasks/"+taskID+"/patches?count=1&exclusiveStartToken="+url.QueryEscape(list.Pagination.LastEvaluated["nextToken"]), "", http.StatusOK, `"statusMessage":"DEVICE_ACTIVATION_NOT_FOUND"`)
	if strings.Contains(body, "nextToken") {
		t.Errorf("last page: %s", body)
	}
	f.expect("GET", "/patches/"+sent.PatchID, "", http.StatusOK, `"statusMessage":"AGENT:Queued"`)
	f.expect("GET", "/patches/nope", "", http.StatusNotFound, "not found")
	f.expect("GET", "/patches/"+sent.PatchID+"/steps", "", http.StatusOK, `{"steps":[{"index":0,"name":"s","status":"pending"`)
	f.expect("GET", "/devices/dev2/patches?status=failed", "", http.StatusOK, `"deviceId":"dev2"`)
	f.expect("GET", "/devices/dev2/patches?patchStatus=success", "", http.StatusOK, `{"patches":[]}`)
	f.expect("GET", "/devices/dev2/patches?patchStatus=odd", "", http.StatusBadRequest, "patchStatus must be")

	chunk, _ := json.Marshal(patchmsg.LogChunk{Version: 1, PatchID: sent.PatchID, Attempt: 1, Step: "s", Stream: "stdout", Seq: 1, Data: "out\n"})
	if err := f.svc.HandleMessage(ctx, "core1", patchmsg.LogsTopic(sent.PatchID), chunk); err != nil {
		t.Fatal(err)
	}
	code, h, body = doAPI(t, f.srv.URL, "tok", "GET", "/patches/"+sent.PatchID+"/logs?step=s&stream=stdout", "", "text/plain")
	if code != http.StatusOK || body != "out\n" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("logs: %d %q %v", code, body, h)
	}
	f.expect("GET", "/patches/"+sent.PatchID+"/logs?stream=tty", "", http.StatusBadRequest, "stream must be")

	f.expect("PATCH", "/patches/"+sent.PatchID, `{"patchStatus":"success"}`, http.StatusBadRequest, "UNSUPPORTED_PATCH_STATUS")
	f.expect("PATCH", "/patches/"+sent.PatchID, `{"patchStatus":"retry"}`, http.StatusNoContent, "")
	f.expect("POST", "/patches/"+sent.PatchID, `{"patchStatus":"retry"}`, http.StatusNoContent, "")
	f.expect("PATCH", "/patches/nope", `{"patchStatus":"retry"}`, http.StatusNotFound, "not found")
	f.expect("GET", "/patches/"+sent.PatchID, "", http.StatusOK, `"attempt":3`)
	f.expect("POST", "/patches/"+sent.PatchID+"/cancel", "", http.StatusOK, `"statusMessage":"AGENT:Cancelled"`)
	f.expect("POST", "/patches/"+sent.PatchID+"/cancel", "", http.StatusConflict, "already ended")
	f.expect("DELETE", "/patches/"+sent.PatchID, "", http.StatusNoContent, "")
	f.expect("DELETE", "/patches/"+sent.PatchID, "", http.StatusNotFound, "not found")
}

func TestPatchBlobsAreOpenButSigned(t *testing.T) {
	f := newPatchFixture(t)
	sum := patches.SHA256Hex([]byte("x"))
	// No token needed, but a signature is.
	req, _ := http.NewRequest("GET", f.srv.URL+"/patchBlobs/"+sum+"?expires=99999999999&signature=00", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a bad signature: %d, want 403", resp.StatusCode)
	}
	if code, _, _ := doAPI(t, f.srv.URL, "", "GET", "/patchTemplates", "", ""); code != http.StatusUnauthorized {
		t.Errorf("templates without a token: %d", code)
	}
}

// A broker without a patch service answers every patch route 503 with a
// message, never a panic or a 404.
func TestPatchRoutesWithoutPatchService(t *testing.T) {
	srv := httptest.NewServer(New(Deps{Auth: tokenAuth("tok")}).Handler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/patchTemplates", ""},
		{"POST", "/patchTasks", `{"patches":[]}`},
		{"GET", "/targets/dev-1", ""},
		{"DELETE", "/patches/p1", ""},
	} {
		code, _, body := doAPI(t, srv.URL, "tok", tc.method, tc.path, tc.body, "")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "device patching is not available") {
			t.Errorf("%s %s = %d %s, want 503 naming patching", tc.method, tc.path, code, body)
		}
	}
}
