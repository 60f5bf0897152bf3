package patches

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// CDF lets a variable name an S3 object the device downloads itself:
// ${aws:s3:presign:https://<bucket>/<key>?expiresIn=N} (§6.3). The broker
// resolves it when it builds a job, so the device gets a URL it can fetch
// without credentials.
const (
	presignOpen = "${aws:s3:presign:"
	// DefaultPresignExpiry is how long a resolved URL stays valid when the
	// expression names no expiresIn (CDF's default).
	DefaultPresignExpiry = time.Hour
	// MaxPresignExpiry bounds expiresIn (S3's limit for presigned URLs).
	MaxPresignExpiry = 7 * 24 * time.Hour
	// MsgPresignFailed starts the status message of a patch whose
	// variables name an object that cannot be presigned.
	MsgPresignFailed = "PRESIGN_FAILED"
)

// Presigner hands out expiring download URLs for keys of the broker's
// artifact store (the aws provider: S3 presigned GET URLs). Missing
// objects are errkind.NotFound, bad keys errkind.Invalid.
type Presigner interface {
	PresignArtifact(ctx context.Context, key string, ttl time.Duration) (string, error)
	// Bucket is the artifacts bucket: an expression naming another bucket
	// fails instead of silently presigning the wrong object.
	Bucket() string
}

// presignRef is one parsed presign expression.
type presignRef struct {
	Bucket string
	Key    string
	TTL    time.Duration
}

// parsePresign parses the inside of ${aws:s3:presign:...}: an https URL
// whose host is the bucket and whose path is the key, with an optional
// expiresIn in seconds and no other query parameter.
func parsePresign(expr string) (presignRef, error) {
	u, err := url.Parse(expr)
	if err != nil {
		return presignRef{}, fmt.Errorf("%q is not a URL: %w", expr, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.Port() != "" {
		return presignRef{}, fmt.Errorf("%q is not https://<bucket>/<key>", expr)
	}
	key := strings.TrimPrefix(u.Path, "/")
	if key == "" {
		return presignRef{}, fmt.Errorf("%q names no object key: use https://<bucket>/<key>", expr)
	}
	ref := presignRef{Bucket: u.Host, Key: key, TTL: DefaultPresignExpiry}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return presignRef{}, fmt.Errorf("%q has a malformed query: %w", expr, err)
	}
	for name, v := range q {
		if name != "expiresIn" || len(v) != 1 {
			return presignRef{}, fmt.Errorf("%q: the only query parameter allowed is one expiresIn", expr)
		}
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || time.Duration(n)*time.Second > MaxPresignExpiry {
			return presignRef{}, fmt.Errorf("%q: expiresIn must be whole seconds from 1 to %d", expr, int(MaxPresignExpiry/time.Second))
		}
		ref.TTL = time.Duration(n) * time.Second
	}
	return ref, nil
}

// resolvePresign replaces every presign expression in the variables'
// values with an expiring URL. A malformed expression, a bad key or a
// missing object is a jobError (the patch fails with PRESIGN_FAILED: why);
// other errors (the store is down) are returned for a later retry.
func (s *Service) resolvePresign(ctx context.Context, vars map[string]string) error {
	for name, v := range vars {
		if !strings.Contains(v, presignOpen) {
			continue
		}
		var out strings.Builder
		rest := v
		for {
			i := strings.Index(rest, presignOpen)
			if i < 0 {
				out.WriteString(rest)
				break
			}
			out.WriteString(rest[:i])
			rest = rest[i+len(presignOpen):]
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				return &jobError{fmt.Sprintf("%s: extraVars %s: ${aws:s3:presign: has no closing '}'", MsgPresignFailed, name)}
			}
			u, err := s.presign(ctx, rest[:j])
			if err != nil {
				if errkind.Is(err, errkind.Invalid) || errkind.Is(err, errkind.NotFound) || errkind.Is(err, errkind.Forbidden) {
					why := errkind.Message(err)
					if why == "" {
						why = err.Error()
					}
					return &jobError{fmt.Sprintf("%s: extraVars %s: %s", MsgPresignFailed, name, why)}
				}
				return fmt.Errorf("presign extraVars %s: %w", name, err)
			}
			out.WriteString(u)
			rest = rest[j+1:]
		}
		vars[name] = out.String()
	}
	return nil
}

// presign resolves one expression. With a Presigner (aws mode) S3 signs
// the URL. Otherwise the key is read from the broker's artifact store and
// stored content-addressed, and the URL is a signed /patchBlobs URL the
// device fetches without a token; it names the bytes as they were at
// dispatch, and the bucket is not checked (the local store has one).
func (s *Service) presign(ctx context.Context, expr string) (string, error) {
	ref, err := parsePresign(expr)
	if err != nil {
		return "", errkind.New(errkind.Invalid, "malformed presign expression: %v", err)
	}
	if s.cfg.Presigner != nil {
		if b := s.cfg.Presigner.Bucket(); ref.Bucket != b {
			return "", errkind.New(errkind.Invalid, "bucket %q is not the broker's artifacts bucket %q", ref.Bucket, b)
		}
		return s.cfg.Presigner.PresignArtifact(ctx, ref.Key, ref.TTL)
	}
	if s.cfg.Blobs == nil || len(s.cfg.URLKey) == 0 {
		return "", errkind.New(errkind.Invalid, "this broker has no artifact store to presign %s from", ref.Key)
	}
	data, _, err := s.cfg.Blobs.GetArtifact(ctx, ref.Key)
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", ref.Key, err)
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	// Stored once per content: a task of many devices copies it once.
	if _, _, err := s.cfg.Blobs.GetArtifact(ctx, BlobKey(sum)); errkind.Is(err, errkind.NotFound) {
		if _, err := s.putBlob(ctx, data); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", fmt.Errorf("blob %s: %w", sum, err)
	}
	return s.blobURL(sum, s.now().Add(ref.TTL)), nil
}
