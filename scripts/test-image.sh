#!/usr/bin/env bash
# Builds the Dockerfile with buildah and tests the image (tests/deploy/image.test.mjs): /healthz and
# a proxied chat completion served by the image's binary against the mock upstream, --healthcheck
# inside the image, the numeric non-root user, no /bin/sh or package manager, the OCI labels, the
# size (< 30 MB), and SIGTERM drain as PID 1 on a read-only root. No Docker engine is needed:
# buildah runs as root with chroot isolation (and its default storage driver), from a
# debootstrapped Debian 12 base tagged as debian:bookworm (shared/research/container-build.md).
#   scripts/test-image.sh                 build and test; installs buildah + debootstrap with apt-get
#   scripts/test-image.sh --inputs-hash   print the hash of what the image is made from (the Dockerfile,
#                                         .dockerignore, the build's dependency list, this test); .ci/run
#                                         runs the image test once per hash and machine
# Several minutes on 2 cores (the project is compiled inside the build stage); a rebuild with
# unchanged sources reuses buildah's layer cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# How the image is assembled: the Dockerfile and its context filter, the build's dependencies (a new
# library must be added to the Dockerfile's packages too), and the test itself. Source changes are
# left out on purpose: they do not change how the image is made, and the unit and integration
# suites test them.
INPUTS=(Dockerfile .dockerignore CMakeLists.txt cmake scripts/test-image.sh tests/deploy/image.test.mjs)
if [ "${1:-}" = --inputs-hash ]; then
  git ls-files -z -- "${INPUTS[@]}" | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
  exit 0
fi

# buildah (its storage, chroot isolation) and the PID-1 case (mount and PID namespaces) need root.
if [ "$(id -u)" != 0 ]; then exec sudo --preserve-env=PATH "$0" "$@"; fi
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "image test: installing buildah and debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
fi
scripts/setup.sh --deps  # Node for the test

BASE=localhost/debian:bookworm
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  # No registry is reachable: the base image is made from Debian's own packages.
  rootfs=$(mktemp -d /tmp/llmgw-bookworm.XXXXXX)
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "image test: debootstrapping a Debian 12 base into $rootfs" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$rootfs" / >/dev/null
  buildah commit --rm "$ctr" "$BASE" >/dev/null
  rm -rf "$rootfs"
fi
buildah tag "$BASE" docker.io/library/debian:bookworm

IMAGE=localhost/llm-gateway:test
version=$(sed -n 's/^project(llm_gateway VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse HEAD)
source=$(git config --get remote.origin.url || echo local)
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it). buildah 1.28's
# layer cache ignores changed build arguments, so a cached LABEL step would keep an old revision:
# the labels are set again with --label, which applies at commit.
labels=()
for kv in "version=$version" "revision=$revision" "source=$source"; do
  labels+=(--label "org.opencontainers.image.$kv")
done
nice -n 10 buildah bud --pull=never --isolation chroot --layers --format docker \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE="$source" \
  "${labels[@]}" -t "$IMAGE" .

(cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error)
LLMGW_IMAGE=$IMAGE LLMGW_IMAGE_REVISION=$revision node --test tests/deploy/image.test.mjs

