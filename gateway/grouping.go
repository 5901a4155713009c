package gateway

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
)

// Base64Suffix marks a job or label name in a push URL whose value is
// base64url-encoded.
const Base64Suffix = "@base64"

// separator joins names and values in a grouping key; it cannot occur in
// valid UTF-8, which ParseGrouping requires of names and values.
const separator = "\xff"

// Grouping is the label set that identifies a push group.
type Grouping map[string]string

// Key returns the canonical form of g: sorted name/value pairs joined by a
// byte that cannot occur in UTF-8. Two groupings are equal iff their keys are.
func (g Grouping) Key() string {
	names := g.sortedNames()
	var sb strings.Builder
	for i, n := range names {
		if i > 0 {
			sb.WriteString(separator)
		}
		sb.WriteString(n)
		sb.WriteString(separator)
		sb.WriteString(g[n])
	}
	return sb.String()
}

func (g Grouping) sortedNames() []string {
	names := make([]string, 0, len(g))
	for n := range g {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// String renders g like a Prometheus label set, e.g. {instance="a",job="b"}.
func (g Grouping) String() string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, n := range g.sortedNames() {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%s=%q", n, g[n])
	}
	sb.WriteByte('}')
	return sb.String()
}

// ParseGrouping decodes the part of a push URL after "/metrics/job": either
// "/<JOB>[/<LABEL>/<VALUE>...]" or "@base64/<B64JOB>[...]". The path must be
// the decoded URL path. Errors carry the Pushgateway's messages.
func ParseGrouping(afterJob string) (Grouping, error) {
	jobBase64 := false
	if rest, ok := strings.CutPrefix(afterJob, Base64Suffix); ok {
		jobBase64 = true
		afterJob = rest
	}
	afterJob = strings.TrimPrefix(afterJob, "/")
	job, labelsPart, hasLabels := strings.Cut(afterJob, "/")
	if hasLabels {
		labelsPart = "/" + labelsPart
	}
	if jobBase64 {
		decoded, err := decodeBase64(job)
		if err != nil {
			return nil, fmt.Errorf("invalid base64 encoding in job name %q: %v", job, err)
		}
		job = decoded
	}
	g, err := splitLabels(labelsPart)
	if err != nil {
		return nil, err
	}
	if job == "" {
		return nil, fmt.Errorf("job name is required")
	}
	g["job"] = job
	if err := g.checkUTF8(); err != nil {
		return nil, err
	}
	return g, nil
}

// checkUTF8 reports the first value of g, the job's first, that is not valid
// UTF-8: such a value could never be exposed, and could contain the
// separator of grouping keys.
func (g Grouping) checkUTF8() error {
	if !utf8.ValidString(g["job"]) {
		return fmt.Errorf("invalid UTF-8 in job name %q", g["job"])
	}
	for _, n := range g.sortedNames() {
		if n != "job" && !utf8.ValidString(g[n]) {
			return fmt.Errorf("invalid UTF-8 in value of label %s: %q", n, g[n])
		}
	}
	return nil
}

// decodeBase64 decodes base64url with optional padding.
func decodeBase64(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	return string(b), err
}

// splitLabels splits "/name/value/..." into a label map.
func splitLabels(labels string) (Grouping, error) {
	result := Grouping{}
	if len(labels) <= 1 {
		return result, nil
	}
	components := strings.Split(labels[1:], "/")
	if len(components)%2 != 0 {
		return nil, fmt.Errorf("odd number of components in label string %q", labels)
	}
	for i := 0; i < len(components); i += 2 {
		name, value := components[i], components[i+1]
		trimmed := strings.TrimSuffix(name, Base64Suffix)
		if !model.LegacyValidation.IsValidLabelName(trimmed) || strings.HasPrefix(trimmed, model.ReservedLabelPrefix) {
			return nil, fmt.Errorf("improper label name %q", trimmed)
		}
		if name != trimmed {
			decoded, err := decodeBase64(value)
			if err != nil {
				return nil, fmt.Errorf("invalid base64 encoding for label %s=%q: %v", trimmed, value, err)
			}
			value = decoded
		}
		result[trimmed] = value
	}
	return result, nil
}
