package bundleformat

import (
	"fmt"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform reads a platform spelled as FormatPlatform spells it:
// os/arch or os/arch/variant, no part empty, no comma or space.
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") || strings.ContainsAny(s, ", \t\n") {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want os/arch or os/arch/variant", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// JoinPlatforms spells platforms as AnnotationPlatforms holds them: each as
// FormatPlatform spells it, sorted, each once, joined by commas.
func JoinPlatforms(ps []ocispec.Platform) string {
	var out []string
	for _, p := range ps {
		out = append(out, FormatPlatform(p))
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ",")
}

// ParsePlatforms reads the value of AnnotationPlatforms. Only the spelling
// JoinPlatforms writes is accepted (non-empty, sorted, no repeats), so a
// narrowed index has one annotation value.
func ParsePlatforms(v string) ([]ocispec.Platform, error) {
	var out []ocispec.Platform
	for _, s := range strings.Split(v, ",") {
		p, err := ParsePlatform(s)
		if err != nil {
			return nil, fmt.Errorf("annotation %s %q: %w", AnnotationPlatforms, v, err)
		}
		out = append(out, p)
	}
	if JoinPlatforms(out) != v {
		return nil, fmt.Errorf("annotation %s %q: want the platforms sorted, each once (%q)", AnnotationPlatforms, v, JoinPlatforms(out))
	}
	return out, nil
}
