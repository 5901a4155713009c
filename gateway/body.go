package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
)

// maxDelimitedMessage bounds one length-delimited protobuf message.
const maxDelimitedMessage = 1 << 30

// DefaultMaxBodyBytes is the default limit of a push body, on the wire and
// decompressed.
const DefaultMaxBodyBytes = 16 << 20

// BodyTooLargeError reports a push body over the size limit.
type BodyTooLargeError struct{ Limit int64 }

func (e *BodyTooLargeError) Error() string {
	return fmt.Sprintf("push body exceeds the limit of %d bytes (--push.max-body-bytes)", e.Limit)
}

// limitReader fails with a *BodyTooLargeError once more than limit bytes
// were read.
type limitReader struct {
	r     io.Reader
	limit int64
	n     int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.limit {
		return n, &BodyTooLargeError{Limit: l.limit}
	}
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return n, &BodyTooLargeError{Limit: l.limit}
	}
	return n, err
}

// isDelimitedProtobuf reports whether a Content-Type names the delimited
// protobuf MetricFamily format.
func isDelimitedProtobuf(contentType string) bool {
	if !strings.Contains(strings.ToLower(contentType), "protobuf") {
		// Text bodies, the common case, without parsing the media type.
		return false
	}
	mt, params, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/vnd.google.protobuf" &&
		params["encoding"] == "delimited" &&
		params["proto"] == "io.prometheus.client.MetricFamily"
}

// decodeBody undoes a gzip or snappy Content-Encoding; other encodings are
// read as they are, like the Pushgateway does. Both the wire body and the
// decoded body are limited to limit bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64) (io.Reader, error) {
	wire := &limitReader{r: http.MaxBytesReader(w, r.Body, limit), limit: limit}
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "gzip":
		zr, err := gzip.NewReader(wire)
		if err != nil {
			return nil, err
		}
		return &limitReader{r: zr, limit: limit}, nil
	case "snappy":
		return &limitReader{r: snappy.NewReader(wire), limit: limit}, nil
	default:
		return wire, nil
	}
}

// ParseBody parses a push body: delimited protobuf when the Content-Type
// says so, the text format 0.0.4 otherwise. An empty body yields no
// families. Errors are the parsers' messages.
func ParseBody(body io.Reader, contentType string) (map[string]*dto.MetricFamily, error) {
	parsed, err := parseBody(body, contentType)
	if err != nil {
		return nil, err
	}
	mfs := make(map[string]*dto.MetricFamily, len(parsed))
	for name, p := range parsed {
		mfs[name] = p.toDto()
	}
	return mfs, nil
}

// parseBody is ParseBody keeping simple metrics as label slices.
func parseBody(body io.Reader, contentType string) (map[string]*parsedFamily, error) {
	var mfs map[string]*dto.MetricFamily
	if isDelimitedProtobuf(contentType) {
		var err error
		if mfs, err = parseDelimited(body); err != nil {
			return nil, err
		}
	} else {
		buf, err := readBody(body)
		defer putBody(buf)
		if err != nil {
			return nil, err
		}
		return parseText(buf.Bytes())
	}
	parsed := make(map[string]*parsedFamily, len(mfs))
	for name, mf := range mfs {
		parsed[name] = fromDto(mf)
	}
	return parsed, nil
}

// parseText parses a text body: with the fast parser when it takes it,
// else with expfmt. Neither keeps a reference to in.
func parseText(in []byte) (map[string]*parsedFamily, error) {
	if parsed, ok := parseTextFast(in); ok {
		return parsed, nil
	}
	return parseTextSlow(in)
}

// parseTextSlow parses a text body with expfmt, which takes every body the
// Pushgateway takes and gives its error messages.
func parseTextSlow(in []byte) (map[string]*parsedFamily, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(in))
	if err != nil {
		return nil, err
	}
	parsed := make(map[string]*parsedFamily, len(mfs))
	for name, mf := range mfs {
		parsed[name] = fromDto(mf)
	}
	return parsed, nil
}

// bodyPool holds the buffers text bodies are read into.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody is the largest buffer kept for the next body.
const maxPooledBody = 1 << 20

// readBody reads body into a pooled buffer, which the caller hands back
// with putBody once nothing refers to its bytes, also after an error.
func readBody(body io.Reader) (*bytes.Buffer, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(body)
	return buf, err
}

func putBody(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBody {
		bodyPool.Put(b)
	}
}

// parseDelimited reads varint-delimited MetricFamily messages; a later
// family of the same name replaces an earlier one.
func parseDelimited(body io.Reader) (map[string]*dto.MetricFamily, error) {
	families := map[string]*dto.MetricFamily{}
	r := bufio.NewReader(body)
	opts := protodelim.UnmarshalOptions{MaxSize: maxDelimitedMessage}
	for {
		mf := &dto.MetricFamily{}
		if err := opts.UnmarshalFrom(r, mf); err != nil {
			// io.EOF means the body ended cleanly between messages.
			if errors.Is(err, io.EOF) {
				return families, nil
			}
			// The decoder's message as it is, as the Pushgateway answers.
			return nil, err
		}
		families[mf.GetName()] = mf
	}
}
