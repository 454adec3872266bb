#!/bin/sh
# The image's ENTRYPOINT: set up CANN's environment when this image has CANN and the host's NPU
# driver is mounted, then run the command. On the cpu stack it only execs the command.
#
# Compose `command:` and Kubernetes `args:` replace CMD, not this, so every job gets it.

if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then
    # set_env.sh reads unset variables; it must not run under `set -u`.
    . /usr/local/Ascend/ascend-toolkit/set_env.sh
fi
if [ -d /usr/local/Ascend/driver/lib64 ]; then
    # The driver is the host's (mounted read-only); its libraries are not in set_env.sh.
    export LD_LIBRARY_PATH="/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/driver/lib64/common${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# msrun starts workers with the bare `python` on PATH: the venv's must come first, whatever
# set_env.sh put in front of it.
case "$PATH" in
    /opt/venv/bin:*) ;;
    *) export PATH="/opt/venv/bin:$PATH" ;;
esac

exec "$@"
