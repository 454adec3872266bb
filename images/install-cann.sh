#!/bin/sh
# Runs in the Dockerfile's builder stage only. When the base image brings CANN (the official CANN
# images, quay.io/ascend/cann:...), that CANN is used: the final stage is built on the same base, so
# nothing is staged. Otherwise (the offline base, `--offline`) it installs CANN from Huawei's .run
# files in images/<stack>/packages/ (you download them; they are not redistributable) and stages
# what the final image needs under /opt/stack-root, which the final stage copies onto /.
# The architecture is the build platform's (`uname -m`): aarch64 or x86_64, nothing hard-coded.
#
# CANN_VERSION=none (the cpu stack): nothing to do but create the empty /opt/stack-root.
# The NPU driver is not installed here: it lives on the host and is mounted at run time
# (/usr/local/Ascend/driver), because it must match the kernel module.
set -eu

STAGE=${TUNEBOX_STACK_ROOT:-/opt/stack-root}
PACKAGES=/build/stack/packages
ASCEND_ROOT=${TUNEBOX_ASCEND_ROOT:-/usr/local/Ascend}

installed_version() {
    # The toolkit's install record: CANN >= 8.5 under cann/<arch>-linux/ (hiascend.com, CANN 8.5.0
    # installation guide, "File Paths"), earlier CANN under ascend-toolkit/latest/<arch>-linux/.
    cat "$ASCEND_ROOT"/cann/*-linux/ascend_toolkit_install.info \
        "$ASCEND_ROOT"/ascend-toolkit/latest/*-linux/ascend_toolkit_install.info 2>/dev/null \
        | sed -n 's/^version=//p' | head -1
}

if [ "${1:-}" = version ]; then
    # `install-cann.sh version`: what is installed under $TUNEBOX_ASCEND_ROOT (tests/test_images.py).
    installed_version
    exit 0
fi
mkdir -p "$STAGE"

if [ "${CANN_VERSION:-none}" = none ]; then
    echo "install-cann: CANN_VERSION=none, no CANN in this image"
    exit 0
fi

from_base=$(installed_version)
if [ -n "$from_base" ]; then
    if [ "$from_base" != "$CANN_VERSION" ]; then
        echo "install-cann: error: the base image has CANN $from_base, images/$STACK/stack.env says" \
             "CANN_VERSION=$CANN_VERSION." >&2
        echo "install-cann: fix: make BASE_IMAGE a CANN $CANN_VERSION image (then invoke image.pin), or" \
             "set CANN_VERSION=$from_base." >&2
        exit 2
    fi
    echo "install-cann: CANN $from_base comes with the base image; no .run files needed"
    exit 0
fi

arch=$(uname -m)
toolkit=""
for f in "$PACKAGES"/Ascend-cann-toolkit_"$CANN_VERSION"_linux-"$arch".run; do
    [ -f "$f" ] && toolkit=$f
done
if [ -z "$toolkit" ]; then
    echo "install-cann: error: images/$STACK/packages/Ascend-cann-toolkit_${CANN_VERSION}_linux-${arch}.run not found." >&2
    echo "install-cann: fix: download the CANN $CANN_VERSION toolkit (and the kernels/ops package for your chip) for $arch" \
         "from https://www.hiascend.com/developer/download and put them in images/$STACK/packages/." >&2
    ls -l "$PACKAGES" >&2 || true
    exit 2
fi

# Huawei's images install CANN with the HwHiAiUser account present; the runtime user joins that
# group at run time (group_add / supplementalGroups) to open /dev/davinci*.
getent group HwHiAiUser >/dev/null || groupadd --gid "${ASCEND_GID:-1000}" HwHiAiUser
getent passwd HwHiAiUser >/dev/null || useradd --gid HwHiAiUser --no-create-home --shell /usr/sbin/nologin HwHiAiUser

# The TBE compiler that CANN installs runs with this Python: the venv, with EXTRA_PIP in it.
export PATH=/opt/venv/bin:$PATH
echo "install-cann: $(basename "$toolkit")"
sh "$toolkit" --check
sh "$toolkit" --install --quiet --install-for-all
# Binary operator packages: "kernels" up to CANN 8.x, "ops" from 8.5 on; install whatever is there.
for pkg in "$PACKAGES"/*cann-kernels*"$CANN_VERSION"*.run "$PACKAGES"/*cann*-ops*"$CANN_VERSION"*.run; do
    [ -f "$pkg" ] || continue
    echo "install-cann: $(basename "$pkg")"
    sh "$pkg" --check
    sh "$pkg" --install --quiet --install-for-all
done

# Stage for the final image: the toolkit tree and its install records (set_env.sh reads them).
mkdir -p "$STAGE/usr/local" "$STAGE/etc"
cp -a /usr/local/Ascend "$STAGE/usr/local/"
[ -d /etc/Ascend ] && cp -a /etc/Ascend "$STAGE/etc/"
# Install logs name the build host's paths and are of no use at run time.
rm -rf "$STAGE/usr/local/Ascend/ascend-toolkit/latest/"*/ascend_install.log \
       "$STAGE/usr/local/Ascend/cann/"*/ascend_install.log 2>/dev/null || true
installed=$(installed_version)
if [ -z "$installed" ]; then
    echo "install-cann: WARNING: no ascend_toolkit_install.info under $ASCEND_ROOT/cann/*-linux/ or" \
         "$ASCEND_ROOT/ascend-toolkit/latest/*-linux/ after installing $(basename "$toolkit")" >&2
elif [ "$installed" != "$CANN_VERSION" ]; then
    echo "install-cann: WARNING: the toolkit says version=$installed, the stack's CANN_VERSION is $CANN_VERSION" >&2
fi
echo "install-cann: CANN toolkit ${installed:-?} staged under $STAGE/usr/local/Ascend"
