#!/bin/sh
# Runs in the Dockerfile's builder stage only: makes /opt/venv for the stack in /build/stack.
#
#   sh build-venv.sh stack     # check the build args, venv + EXTRA_PIP + MindSpore + MindFormers
#   sh build-venv.sh deps      # tunebox's dependencies from pyproject.toml (when INSTALL_TUNEBOX=1)
#   sh build-venv.sh tunebox   # pip install . into /opt/tunebox-root (when INSTALL_TUNEBOX=1)
#
# pip trusts the CA bundle found in /build/ca/: the host's, mounted there for this RUN only as the
# BuildKit secret `ca` by `invoke image.build` (outbound TLS may be intercepted by a proxy with its
# own CA). No layer keeps it.
set -eu

STACK_DIR=${TUNEBOX_BUILD_STACK:-/build/stack}
STACK_ENV=$STACK_DIR/stack.env
VENV=/opt/venv
phase=${1:?usage: build-venv.sh stack|tunebox}

for ca in /build/ca/*.crt /build/ca/*.pem; do
    if [ -f "$ca" ]; then
        export PIP_CERT="$ca"
        echo "build-venv: pip trusts the CA bundle from the build secret ($(basename "$ca"))"
        break
    fi
done

pip_install() {
    # --no-cache-dir: nothing of the download is left in a layer; -c: the stack's lock file.
    "$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --progress-bar off \
        -c "$STACK_DIR/constraints.txt" "$@"
}

check_build_args() {
    # The labels come from the build args, the install from stack.env: they must agree, or the
    # image would claim versions it does not have.
    # BASE_IMAGE is the one exception: the build picks it (REF@DIGEST from base.lock, or
    # OFFLINE_BASE_IMAGE with --offline) and the image's base.name label records which.
    bad=0
    for key in $(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$STACK_ENV" | grep -vx BASE_IMAGE); do
        want=$(env -i sh -c "set -a; . '$STACK_ENV'; printenv $key" || true)
        got=$(printenv "$key" || true)
        if [ "$want" != "$got" ]; then
            echo "build-venv: error: build arg $key='$got' but images/$STACK/stack.env says '$want'." >&2
            bad=1
        fi
    done
    if [ "$bad" = 1 ]; then
        echo "build-venv: fix: build with 'invoke image.build --stack $STACK' (it passes stack.env)," \
             "or pass every line of stack.env as --build-arg." >&2
        exit 2
    fi
}

mindspore_requirement() {
    # A wheel in images/<stack>/packages/ wins (MindSpore 2.3.0rc2 is not on PyPI; Huawei's site has it).
    for wheel in "$STACK_DIR"/packages/mindspore-"$MINDSPORE_VERSION"-*.whl; do
        if [ -f "$wheel" ]; then echo "$wheel"; return; fi
    done
    echo "mindspore==$MINDSPORE_VERSION"
}

case "$phase" in
stack)
    check_build_args
    "$PYTHON" -m venv "$VENV"
    ms=$(mindspore_requirement)
    echo "build-venv: $PYTHON venv with $ms, mindformers==$MINDFORMERS_VERSION ${EXTRA_PIP:+and $EXTRA_PIP}"
    # shellcheck disable=SC2086  # EXTRA_PIP is a list of requirements
    pip_install $EXTRA_PIP "$ms" "mindformers==$MINDFORMERS_VERSION"
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    for path in ${PRUNE:-}; do
        # Backends this stack never loads (stack.env says which and why).
        if [ -e "$site/$path" ]; then
            echo "build-venv: prune $path ($(du -sh "$site/$path" | cut -f1))"
            rm -rf "${site:?}/$path"
        fi
    done
    ;;
deps)
    # tunebox's own dependencies, read from pyproject.toml: they change far less often than the
    # code, so this layer (and the final stage's copy of /opt/venv) survives code changes.
    if [ "$INSTALL_TUNEBOX" = 1 ]; then
        deps=$("$VENV/bin/python" -c "import tomllib; print(' '.join(repr(d) for d in tomllib.load(open('/build/src/pyproject.toml', 'rb'))['project']['dependencies']))")
        echo "build-venv: tunebox's dependencies: $deps"
        eval "pip_install $deps"
    fi
    "$VENV/bin/python" -m pip check || echo "build-venv: warning: pip check found conflicts (above)"
    # Versions from the installed metadata: importing mindspore here could probe for devices.
    "$VENV/bin/python" -c "from importlib.metadata import version as v; print('build-venv: installed mindspore', v('mindspore'), '/ mindformers', v('mindformers'))"
    ;;
tunebox)
    # `pip install .` into a separate root (/opt/tunebox-root/opt/venv/...): the final stage lays
    # it over /opt/venv as a small layer of its own, so a code change does not re-copy the venv.
    ROOT=/opt/tunebox-root
    mkdir -p "$ROOT/etc/tunebox"
    if [ "$INSTALL_TUNEBOX" = 1 ]; then
        pip_install --no-deps --root "$ROOT" /build/src
        echo "tunebox $("$VENV/bin/python" -c "import tomllib; print(tomllib.load(open('/build/src/pyproject.toml', 'rb'))['project']['version'])") installed into $VENV by pip install . (--no-deps; dependencies in the venv layer)" > "$ROOT/etc/tunebox/tunebox-install.txt"
    else
        echo "tunebox not installed: INSTALL_TUNEBOX=0 for $STACK (see images/$STACK/README.md); code in /app only" > "$ROOT/etc/tunebox/tunebox-install.txt"
    fi
    cat "$ROOT/etc/tunebox/tunebox-install.txt"
    ;;
*)
    echo "build-venv: unknown phase '$phase' (stack, deps or tunebox)" >&2
    exit 2
    ;;
esac
