# Podman for the image test (scripts/image_test.sh) on a machine with no registry in reach, as
# found to work on the CI machines: source it (`. scripts/podman_env.sh`), then run podman.
#
# - podman, runc, mmdebstrap, uidmap, iptables, catatonit, CNI's dnsname plugin (and
#   podman-compose) from Debian when missing,
#   as root on a Debian-like machine;
# - a containers.conf and a storage.conf of our own under $LLMP_PODMAN_DIR (default
#   ~/.cache/llmplatform/podman: outside the checkout, so a fresh clone (CI's) reuses the base
#   image and the layer cache, and the build context never holds the storage), exported as CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, so
#   nothing of the machine's own container configuration is touched: runc (crun refuses the
#   hybrid cgroups here), cgroupfs, and ulimits the sandbox allows (root lacks
#   CAP_SYS_RESOURCE and the open-files hard limit is 20000, so podman's default
#   nofile=1048576 fails);
# - the base image the Dockerfile's ARG PYTHON_IMAGE names, built from Debian packages once
#   (mmdebstrap, about 15 s) and kept: `llmp_base_image` prints its name.
#
# Every image built with this configuration (localhost/llmplatform:ci among them) is in that
# storage: other steps that want it source this file too.

LLMP_PODMAN_DIR="${LLMP_PODMAN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llmplatform/podman}"
LLMP_BASE_IMAGE="${LLMP_BASE_IMAGE:-localhost/python:3.11-slim-bookworm}"
LLMP_DEBIAN_MIRROR="${LLMP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

llmp_podman_packages() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v newuidmap >/dev/null 2>&1 || missing+=(uidmap)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v podman-compose >/dev/null 2>&1 || missing+=(podman-compose)
  # The pod's infra container of `podman kube play` (tests/test_helm_kube_play.py).
  command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] \
    || missing+=(catatonit)
  # Name lookup between compose services (podman 4's CNI networks).
  [ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "podman_env: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
    return 1
  fi
  echo "podman_env: installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null; }
}

llmp_podman_config() {
  mkdir -p "$LLMP_PODMAN_DIR/storage" "$LLMP_PODMAN_DIR/run" "$LLMP_PODMAN_DIR/tmp"
  cat > "$LLMP_PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$LLMP_PODMAN_DIR/events.log"
image_copy_tmp_dir = "$LLMP_PODMAN_DIR/tmp"
tmp_dir = "$LLMP_PODMAN_DIR/run/libpod"
CONF
  cat > "$LLMP_PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$LLMP_PODMAN_DIR/storage"
runroot = "$LLMP_PODMAN_DIR/run"
CONF
  export CONTAINERS_CONF="$LLMP_PODMAN_DIR/containers.conf"
  export CONTAINERS_STORAGE_CONF="$LLMP_PODMAN_DIR/storage.conf"
  export TMPDIR="$LLMP_PODMAN_DIR/tmp"
}

# The stand-in for python:3.11-slim-bookworm: Debian 12's Python 3.11 with venv and a `python`,
# where the official image has its own build of Python in /usr/local.
llmp_base_image() {
  if ! podman image exists "$LLMP_BASE_IMAGE"; then
    echo "podman_env: building $LLMP_BASE_IMAGE from Debian bookworm (mmdebstrap)" >&2
    # As Debian's slim images: no manuals, documentation or translations (about 50 MB).
    mmdebstrap --quiet --variant=minbase \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm - "$LLMP_DEBIAN_MIRROR" \
      | podman import --quiet \
          --change 'ENV LANG=C.UTF-8' \
          --change 'CMD ["python3"]' \
          - "$LLMP_BASE_IMAGE" >/dev/null
  fi
  echo "$LLMP_BASE_IMAGE"
}

llmp_podman_packages && llmp_podman_config
