package bundleformat

import (
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotation keys of index.json's descriptors: both carry the image's fully
// normalised reference.
const (
	AnnotationRefName   = ocispec.AnnotationRefName
	AnnotationImageName = "io.containerd.image.name"
)

// Media types of the JSON blobs a bundle may hold: OCI's and, in pulled
// images, Docker's.
const (
	MediaTypeOCIIndex       = ocispec.MediaTypeImageIndex
	MediaTypeOCIManifest    = ocispec.MediaTypeImageManifest
	MediaTypeOCIConfig      = ocispec.MediaTypeImageConfig
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
)

// IsIndex tells an image index (or Docker manifest list).
func IsIndex(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }

// IsManifest tells an image manifest.
func IsManifest(mt string) bool { return mt == MediaTypeOCIManifest || mt == MediaTypeDockerManifest }

// IsConfig tells an image config.
func IsConfig(mt string) bool { return mt == MediaTypeOCIConfig || mt == MediaTypeDockerConfig }

// IsJSON tells the blobs a bundle lists before its layers.
func IsJSON(mt string) bool { return IsIndex(mt) || IsManifest(mt) || IsConfig(mt) }

// IsLayer tells a layer that unpacks into the image's root filesystem (and
// so has a diff ID in the config), as containerd counts them.
func IsLayer(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.oci.image.layer.") ||
		strings.HasPrefix(mt, "application/vnd.docker.image.rootfs.")
}
