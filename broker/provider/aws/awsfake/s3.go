package awsfake

import (
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// object is a stored S3 object.
type object struct {
	data        []byte
	contentType string
	etag        string
	modified    time.Time
}

// putResult is PutObject's response.
type putResult struct{ etag string }

// bucketRE is S3's bucket naming rule (general purpose buckets).
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// maxObjectSize bounds what the fake accepts in one PutObject (5 GiB in S3;
// the fake keeps objects in memory).
const maxObjectSize = 64 << 20

// Object returns a stored object's bytes and content type, for tests.
func (f *Fake) Object(bucketName, key string) ([]byte, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.s3[bucketName][key]
	return o.data, o.contentType, ok
}

func (f *Fake) routeS3(mux *http.ServeMux) {
	h := func(pattern, op string, fn handlerFunc) { f.handle(mux, "s3", pattern, op, fn) }
	h("PUT /{bucket}/{key...}", "PutObject", f.putObject)
	h("GET /{bucket}/{key...}", "GetObject", f.getObject)
	h("HEAD /{bucket}/{key...}", "HeadObject", f.getObject)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeXMLError(w, errorf(http.StatusNotImplemented, "NotImplemented", "the fake does not serve %s %s (path-style requests only)", r.Method, r.URL.Path))
	})
}

// s3Target validates the bucket and key of a path-style request.
func (f *Fake) s3Target(r *http.Request) (string, string, *apiError) {
	b, key := r.PathValue("bucket"), r.PathValue("key")
	if !bucketRE.MatchString(b) {
		return "", "", errorf(http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
	}
	if key == "" {
		return "", "", errorf(http.StatusBadRequest, "InvalidArgument", "The object key is empty.")
	}
	if len(key) > 1024 {
		return "", "", errorf(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	return b, key, nil
}

func (f *Fake) putObject(r *http.Request) (int, any, *apiError) {
	b, key, err := f.s3Target(r)
	if err != nil {
		return 0, nil, err
	}
	if r.Header.Get("Content-Encoding") == "aws-chunked" || r.Header.Get("X-Amz-Decoded-Content-Length") != "" {
		return 0, nil, errorf(http.StatusNotImplemented, "NotImplemented", "the fake does not decode aws-chunked bodies: configure the client with RequestChecksumCalculation WhenRequired")
	}
	data, rerr := io.ReadAll(io.LimitReader(r.Body, maxObjectSize+1))
	if rerr != nil {
		return 0, nil, errorf(http.StatusBadRequest, "IncompleteBody", "could not read the body: %v", rerr)
	}
	if len(data) > maxObjectSize {
		return 0, nil, errorf(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
	}
	if cl := r.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(data)) {
		return 0, nil, errorf(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "binary/octet-stream" // S3's default
	}
	sum := md5.Sum(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	f.mu.Lock()
	defer f.mu.Unlock()
	objs := f.s3[b]
	if objs == nil {
		return 0, nil, errorf(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	}
	objs[key] = object{data: data, contentType: ct, etag: etag, modified: time.Now()}
	return http.StatusOK, putResult{etag: etag}, nil
}

func (f *Fake) getObject(r *http.Request) (int, any, *apiError) {
	b, key, err := f.s3Target(r)
	if err != nil {
		return 0, nil, err
	}
	if err := checkPresigned(r, time.Now()); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs := f.s3[b]
	if objs == nil {
		return 0, nil, errorf(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	}
	o, ok := objs[key]
	if !ok {
		return 0, nil, errorf(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	}
	return http.StatusOK, o, nil
}

// writeS3 writes an S3 response: headers and raw bytes, or an XML error.
func writeS3(w http.ResponseWriter, status int, body any, err *apiError) {
	if err != nil {
		writeXMLError(w, err)
		return
	}
	switch b := body.(type) {
	case putResult:
		w.Header().Set("ETag", b.etag)
		w.WriteHeader(status)
	case object:
		w.Header().Set("ETag", b.etag)
		w.Header().Set("Content-Type", b.contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
		w.Header().Set("Last-Modified", b.modified.UTC().Format(http.TimeFormat))
		w.WriteHeader(status)
		_, _ = w.Write(b.data)
	default:
		w.WriteHeader(status)
	}
}

// checkPresigned refuses an expired presigned URL, as S3 does. Requests
// signed in the Authorization header pass.
func checkPresigned(r *http.Request, now time.Time) *apiError {
	q := r.URL.Query()
	if q.Get("X-Amz-Signature") == "" {
		return nil
	}
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return errorf(http.StatusBadRequest, "AuthorizationQueryParametersError", "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || secs > 604800 {
		return errorf(http.StatusBadRequest, "AuthorizationQueryParametersError", "X-Amz-Expires must be a number of seconds from 1 to 604800")
	}
	if now.After(signed.Add(time.Duration(secs) * time.Second)) {
		return errorf(http.StatusForbidden, "AccessDenied", "Request has expired")
	}
	return nil
}
