#!/bin/bash
# The image's ENTRYPOINT: set up CANN's environment when this image has CANN and the host's NPU
# driver is mounted, then run the command. On the cpu stack it only execs the command.
#
# Compose `command:` and Kubernetes `args:` replace CMD, not this, so every job gets it.
#
# CANN >= 8.5 installs under /usr/local/Ascend/cann/ (set_env.sh there); before, under
# /usr/local/Ascend/ascend-toolkit/ (set_env.sh next to latest/). TUNEBOX_CANN_SET_ENV names
# another file. An image built with CANN (tunebox.cann in /etc/tunebox/image.json is not "none")
# that finds none says so on stderr: MindSpore would fail later with a less helpful message.

ascend_root=${TUNEBOX_ASCEND_ROOT:-/usr/local/Ascend}
labels=${TUNEBOX_IMAGE_LABELS:-/etc/tunebox/image.json}
set_env=""
for candidate in ${TUNEBOX_CANN_SET_ENV:-} "$ascend_root/cann/set_env.sh" "$ascend_root/ascend-toolkit/set_env.sh"; do
    if [ -f "$candidate" ]; then
        set_env=$candidate
        break
    fi
done
if [ -n "$set_env" ]; then
    # set_env.sh is written for bash (Huawei's guides `source` it from bash; dash, Debian's /bin/sh,
    # stops at bash-only syntax), hence this script's #!/bin/bash. It reads unset variables: no `set -u`.
    # shellcheck disable=SC1090
    source "$set_env"
    export TUNEBOX_CANN_SET_ENV="$set_env"
elif [ -f "$labels" ] && ! grep -q '"tunebox.cann": "none"' "$labels"; then
    echo "tunebox-entrypoint: WARNING: this is an Ascend image but no CANN set_env.sh was found" \
         "(looked for $ascend_root/cann/set_env.sh and $ascend_root/ascend-toolkit/set_env.sh;" \
         "set TUNEBOX_CANN_SET_ENV to its path). Jobs on Ascend will fail." >&2
fi
if [ -d "$ascend_root/driver/lib64" ]; then
    # The driver is the host's (mounted read-only); its libraries are not in set_env.sh.
    export LD_LIBRARY_PATH="$ascend_root/driver/lib64/driver:$ascend_root/driver/lib64/common${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -d /usr/local/dcmi ]; then
    export LD_LIBRARY_PATH="/usr/local/dcmi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# msrun starts workers with the bare `python` on PATH: the venv's must come first, whatever
# set_env.sh put in front of it.
case "$PATH" in
    /opt/venv/bin:*) ;;
    *) export PATH="/opt/venv/bin:$PATH" ;;
esac

exec "$@"
