package patches_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/patches"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// The server wires the aws provider as the presigner.
var _ patches.Presigner = (*awsprov.Provider)(nil)

// presignPatch creates a template with tplVars, submits one patch with
// patchVars on dev0 and dispatches it; it returns the patch and the job
// sent (nil when none was).
func presignPatch(t *testing.T, e *env, tplVars, patchVars map[string]string) (patches.Patch, *patchmsg.Job) {
	t.Helper()
	err := e.svc.CreateTemplate(e.ctx, patches.TemplateInput{Name: "tpl", ExtraVars: tplVars,
		Steps: []patchmsg.StepSpec{{Name: "fetch", Run: "curl -fsS \"$PATCH_VAR_URL\""}}})
	if err != nil {
		t.Fatal(err)
	}
	e.target("dev0", "core1")
	id := e.submit(patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "dev0", PatchTemplateName: "tpl", ExtraVars: patchVars}}})
	e.tick()
	p := e.patches(id)[0]
	jobs := e.jobs()
	if len(jobs) == 0 {
		return p, nil
	}
	return p, &jobs[0]
}

// checkBlobURL checks that s is a signed blob URL of data expiring at exp.
func checkBlobURL(t *testing.T, e *env, s, data string, exp time.Time) {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host != "broker.example:8443" || u.Path != "/patchBlobs/"+sha(data) {
		t.Fatalf("URL %q: not the blob of %q (%v)", s, data, err)
	}
	q := u.Query()
	if got := q.Get("expires"); got != strconv.FormatInt(exp.Unix(), 10) {
		t.Errorf("URL %q expires at %s, want %d", s, got, exp.Unix())
	}
	got, err := e.svc.Blob(e.ctx, sha(data), q.Get("expires"), q.Get("signature"))
	if err != nil || string(got) != data {
		t.Errorf("blob of %q: %q, %v", s, got, err)
	}
}

func TestPresignLocal(t *testing.T) {
	const obj = "greengrass2/artifacts/site1/app.json"
	const body = `{"app":1}`
	ok := "${aws:s3:presign:https://cdf-bucket/" + obj + "}"
	fails := func(why string) string { return patches.MsgPresignFailed + ": extraVars url: " + why }
	tests := []struct {
		name      string
		tplVars   map[string]string
		patchVars map[string]string
		// want is the url variable with every {URL} replaced by the
		// checked signed URL; ttl its expiry.
		want string
		ttl  time.Duration
		// fail is the start of the status message of a failed patch.
		fail string
	}{
		{name: "default expiry", patchVars: map[string]string{"url": ok}, want: "{URL}", ttl: time.Hour},
		{name: "expiresIn", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj + "?expiresIn=60}"}, want: "{URL}", ttl: time.Minute},
		{name: "template variable", tplVars: map[string]string{"url": ok}, want: "{URL}", ttl: time.Hour},
		{name: "inside text, twice", patchVars: map[string]string{"url": "a=" + ok + " b=" + ok + " ${other}"}, want: "a={URL} b={URL} ${other}", ttl: time.Hour},
		{name: "no expression", patchVars: map[string]string{"url": "https://example.com/x?expiresIn=5"}, want: "https://example.com/x?expiresIn=5"},
		{name: "patch wins over template", tplVars: map[string]string{"url": "${aws:s3:presign:broken"}, patchVars: map[string]string{"url": ok}, want: "{URL}", ttl: time.Hour},
		{name: "unclosed", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj}, fail: fails("${aws:s3:presign: has no closing '}'")},
		{name: "not https", patchVars: map[string]string{"url": "${aws:s3:presign:http://b/" + obj + "}"}, fail: fails("malformed presign expression: ")},
		{name: "no key", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/}"}, fail: fails("malformed presign expression: ")},
		{name: "zero expiry", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj + "?expiresIn=0}"}, fail: fails("malformed presign expression: ")},
		{name: "expiry not a number", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj + "?expiresIn=1h}"}, fail: fails("malformed presign expression: ")},
		{name: "expiry too long", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj + "?expiresIn=604801}"}, fail: fails("malformed presign expression: ")},
		{name: "other parameter", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/" + obj + "?versionId=3}"}, fail: fails("malformed presign expression: ")},
		{name: "missing object", patchVars: map[string]string{"url": "${aws:s3:presign:https://b/none.json}"}, fail: fails("artifact none.json does not exist")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.blobs.PutArtifact(e.ctx, obj, "", []byte(body)); err != nil {
				t.Fatal(err)
			}
			p, job := presignPatch(t, e, tc.tplVars, tc.patchVars)
			if tc.fail != "" {
				if p.PatchStatus != patchmsg.PatchFailed || !strings.HasPrefix(p.StatusMessage, tc.fail) || job != nil {
					t.Fatalf("patch %s %q (job sent: %v), want failed %q", p.PatchStatus, p.StatusMessage, job != nil, tc.fail)
				}
				return
			}
			if job == nil {
				t.Fatalf("no job sent: patch %s %q", p.PatchStatus, p.StatusMessage)
			}
			got := job.Vars["url"]
			parts := strings.Split(tc.want, "{URL}")
			for i, part := range parts {
				if !strings.HasPrefix(got, part) {
					t.Fatalf("url variable %q, want %q", job.Vars["url"], tc.want)
				}
				got = got[len(part):]
				if i == len(parts)-1 {
					break
				}
				end := strings.IndexByte(got, ' ')
				if end < 0 {
					end = len(got)
				}
				checkBlobURL(t, e, got[:end], body, e.clock().Add(tc.ttl))
				got = got[end:]
			}
			if got != "" {
				t.Errorf("url variable %q, want %q", job.Vars["url"], tc.want)
			}
			// The stored patch keeps the expression, not the URL.
			if stored := e.patch(p.PatchID).ExtraVars["url"]; stored != tc.patchVars["url"] {
				t.Errorf("stored extraVars url %q, want %q", stored, tc.patchVars["url"])
			}
		})
	}
}

// fakePresigner is S3 presigning as the aws provider does it.
type fakePresigner struct {
	bucket string
	err    error
	keys   []string
	ttls   []time.Duration
}

func (f *fakePresigner) Bucket() string { return f.bucket }

func (f *fakePresigner) PresignArtifact(ctx context.Context, key string, ttl time.Duration) (string, error) {
	f.keys, f.ttls = append(f.keys, key), append(f.ttls, ttl)
	if f.err != nil {
		return "", f.err
	}
	return "https://" + f.bucket + ".s3.amazonaws.com/ggfleet/" + key + "?X-Amz-Expires=" + strconv.Itoa(int(ttl/time.Second)), nil
}

func TestPresignAWS(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		err     error
		want    string // the url variable
		fail    string // the start of a failed patch's status message
		waiting bool   // the patch waits for the next tick
	}{
		{name: "presigned", expr: "${aws:s3:presign:https://arts/a/b.zip?expiresIn=120}",
			want: "https://arts.s3.amazonaws.com/ggfleet/a/b.zip?X-Amz-Expires=120"},
		{name: "other bucket", expr: "${aws:s3:presign:https://other/a/b.zip}",
			fail: patches.MsgPresignFailed + `: extraVars url: bucket "other" is not the broker's artifacts bucket "arts"`},
		{name: "missing object", expr: "${aws:s3:presign:https://arts/a/b.zip}", err: errkind.New(errkind.NotFound, "artifact s3://arts/a/b.zip: not found"),
			fail: patches.MsgPresignFailed + ": extraVars url: artifact s3://arts/a/b.zip: not found"},
		{name: "S3 unreachable", expr: "${aws:s3:presign:https://arts/a/b.zip}", err: errors.New("dial tcp: connection refused"), waiting: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ps := &fakePresigner{bucket: "arts", err: tc.err}
			e.svc = patches.New(patches.Config{Store: e.db, Publisher: e.pub, Blobs: e.blobs, Presigner: ps,
				URLKey: []byte("0123456789abcdef0123456789abcdef"), BaseURL: "https://broker.example:8443", Now: e.clock})
			if err := e.svc.CreateTemplate(e.ctx, patches.TemplateInput{Name: "tpl", Steps: []patchmsg.StepSpec{{Name: "s", Run: "true"}}}); err != nil {
				t.Fatal(err)
			}
			e.target("dev0", "core1")
			id := e.submit(patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "dev0", PatchTemplateName: "tpl", ExtraVars: map[string]string{"url": tc.expr}}}})
			err := e.svc.Tick(e.ctx)
			p := e.patches(id)[0]
			jobs := e.jobs()
			switch {
			case tc.waiting:
				if err == nil || p.Final() || p.StatusMessage != "" || len(jobs) != 0 {
					t.Errorf("tick %v; patch %s %q, %d jobs; want an error and the patch still waiting", err, p.PatchStatus, p.StatusMessage, len(jobs))
				}
			case tc.fail != "":
				if err != nil || p.PatchStatus != patchmsg.PatchFailed || !strings.HasPrefix(p.StatusMessage, tc.fail) || len(jobs) != 0 {
					t.Errorf("tick %v; patch %s %q, %d jobs; want failed %q", err, p.PatchStatus, p.StatusMessage, len(jobs), tc.fail)
				}
			default:
				if err != nil || len(jobs) != 1 || jobs[0].Vars["url"] != tc.want {
					t.Fatalf("tick %v; %d jobs (%+v); want url %q", err, len(jobs), jobs, tc.want)
				}
				if len(ps.keys) != 1 || ps.keys[0] != "a/b.zip" || ps.ttls[0] != 2*time.Minute {
					t.Errorf("presigned %v for %v, want a/b.zip for 2m", ps.keys, ps.ttls)
				}
			}
		})
	}
}

type noTokens struct{}

func (noTokens) Authenticate(ctx context.Context, token string) error {
	return errkind.New(errkind.Unauthorized, "no token is valid here")
}

// TestPresignedURLOverHTTP resolves an expression against the local
// provider's artifact store and fetches the URL from the broker's HTTP API
// without a token, then again after it expired.
func TestPresignedURLOverHTTP(t *testing.T) {
	e := newEnv(t)
	prov, err := local.New(local.Config{Store: e.db.Registry(), ArtifactsDir: filepath.Join(t.TempDir(), "artifacts")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	const key = "greengrass2/artifacts/site1/install.sh"
	const body = "#!/bin/sh\necho installed\n"
	if _, err := prov.PutArtifact(e.ctx, key, "text/x-shellscript", []byte(body)); err != nil {
		t.Fatal(err)
	}
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	e.svc = patches.New(patches.Config{Store: e.db, Publisher: e.pub, Blobs: prov,
		URLKey: []byte("0123456789abcdef0123456789abcdef"), BaseURL: srv.URL, Now: e.clock})
	handler = httpapi.New(httpapi.Deps{Auth: noTokens{}, Patches: e.svc, Artifacts: prov}).Handler()

	p, job := presignPatch(t, e, nil, map[string]string{"url": "${aws:s3:presign:https://cdf/" + key + "?expiresIn=300}"})
	if job == nil {
		t.Fatalf("no job: patch %s %q", p.PatchStatus, p.StatusMessage)
	}
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	u := job.Vars["url"]
	if !strings.HasPrefix(u, srv.URL+"/patchBlobs/") {
		t.Fatalf("url %q is not a blob URL of %s", u, srv.URL)
	}
	if code, got := get(u); code != http.StatusOK || got != body {
		t.Fatalf("GET %s: %d %q, want 200 %q", u, code, got, body)
	}
	e.advance(299 * time.Second)
	if code, _ := get(u); code != http.StatusOK {
		t.Errorf("GET before expiry: %d", code)
	}
	e.advance(2 * time.Second)
	if code, got := get(u); code != http.StatusForbidden || !strings.Contains(got, "expired") {
		t.Errorf("GET after expiry: %d %q, want 403 saying it expired", code, got)
	}
}
