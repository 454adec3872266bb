# tunebox: one Dockerfile for every pinned stack in images/<STACK>/ (stack.env holds its build args).
#
#   invoke image.base                         # the local Debian base image (no registry needed)
#   invoke image.build --stack cpu-ms2.9      # passes images/cpu-ms2.9/stack.env as build args
#   invoke image.build --stack ascend-cann9.0-ms2.9 --platform linux/arm64,linux/amd64
#                                             # FROM the official CANN image, by the digest in base.lock
#
# Needs BuildKit (RUN --mount=type=secret): Docker >= 23 with buildx, or Debian's docker.io 20.10
# with DOCKER_BUILDKIT=1; `invoke image.build` picks such a client. No syntax directive on purpose:
# it makes BuildKit pull its frontend from a registry. Every FROM is a build arg (BASE_IMAGE: a local
# image `invoke image.base` makes, or a registry image pinned by digest) or an earlier stage.
# Nothing here names an architecture: the base decides (arm64 Ascend hosts, x86_64 ones).
#
# Stages: runtime (OS + Python, unless the base brings its Python; compilers only for Ascend stacks,
# whose CANN compiles operators) -> builder (makes /opt/venv, installs CANN from .run files unless
# the base brings it) -> final (runtime + the venv + the code, non-root). pip trusts the host's CA bundle,
# which only the builder's install steps see, as the BuildKit secret `ca` (`--secret id=ca,src=FILE`):
# it is mounted for those RUNs and written to no layer. `invoke image.build` scans every layer of the
# final image for it after every build.

ARG STACK=cpu-ms2.9
ARG BASE_IMAGE=tunebox/debian-bookworm:base

# ---- runtime: what every stage shares ----------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG PYTHON=python3.11
ARG RUNTIME_PACKAGES=libgomp1
ENV LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive
# The local base's sources.list points at the host's Debian mirror over plain HTTP (apt checks
# signatures), so apt needs no CA here. A base that brings ${PYTHON} (the CANN images' own build of
# it, with CANN's modules) keeps it: a second one from apt would shadow it.
RUN if command -v "${PYTHON}" >/dev/null; then os_python=""; else os_python="${PYTHON}"; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends ${os_python:+"$os_python"} ${RUNTIME_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# ---- builder: the venv (and CANN), made with the host's CA bundle ------------------------------
FROM runtime AS builder
ARG STACK
ARG BASE_IMAGE
ARG PYTHON
ARG RUNTIME_PACKAGES
ARG MINDSPORE_VERSION=2.9.0
ARG MINDFORMERS_VERSION=1.9.0
ARG CANN_VERSION=none
ARG INSTALL_TUNEBOX=1
ARG EXTRA_PIP=
ARG PRUNE=
ARG OFFLINE_BASE_IMAGE=
# Debian's and Ubuntu's Python keeps venv in a package of its own; a Python built from source has it.
RUN if [ "$(command -v "${PYTHON}")" = "/usr/bin/${PYTHON}" ]; then \
        apt-get update \
     && apt-get install -y --no-install-recommends "${PYTHON}-venv" \
     && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi
COPY images/build-venv.sh images/install-cann.sh /build/
# Only what the install reads (stack.env, the lock, your packages/): editing a README keeps the cache.
COPY images/${STACK}/stack.env images/${STACK}/constraints.txt /build/stack/
COPY images/${STACK}/packages/ /build/stack/packages/
# The heavy layers (MindSpore ~2.5 GB, CANN) come before the code, so a code change rebuilds in seconds.
RUN --mount=type=secret,id=ca,target=/build/ca/ca-certificates.crt \
    sh /build/build-venv.sh stack \
 && sh /build/install-cann.sh
RUN mkdir -p /opt/stack-root/etc/tunebox \
 && cp /build/stack/stack.env /opt/stack-root/etc/tunebox/stack.env
COPY pyproject.toml README* /build/src/
RUN --mount=type=secret,id=ca,target=/build/ca/ca-certificates.crt \
    sh /build/build-venv.sh deps
COPY tunebox /build/src/tunebox
RUN --mount=type=secret,id=ca,target=/build/ca/ca-certificates.crt \
    sh /build/build-venv.sh tunebox

# ---- final: runtime + venv + code, non-root ----------------------------------------------------
FROM runtime AS final
ARG STACK
ARG BASE_IMAGE
ARG PYTHON
ARG MINDSPORE_VERSION=2.9.0
ARG MINDFORMERS_VERSION=1.9.0
ARG CANN_VERSION=none
ARG TUNEBOX_UID=10001
# /opt/stack-root mirrors / : the stack's stack.env under etc/tunebox/, and CANN under
# usr/local/Ascend for Ascend stacks. (Never empty: the classic builder loses an empty COPY layer.)
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/stack-root/ /
# tunebox itself (pip install . under /opt/venv), a small layer that changes with the code.
COPY --from=builder /opt/tunebox-root/ /
COPY images/entrypoint.sh /usr/local/bin/tunebox-entrypoint
COPY images/pipeline.sh /usr/local/bin/tunebox-pipeline
COPY images/check_submission.py /usr/local/bin/tunebox-check-submission
COPY pyproject.toml tasks.py /app/
COPY jobs /app/jobs
COPY tunebox /app/tunebox
COPY recipes /app/recipes
# /data is the working directory and the volume: runs/, the model cache and MindFormers' ./output.
RUN groupadd --gid ${TUNEBOX_UID} tunebox \
 && useradd --uid ${TUNEBOX_UID} --gid ${TUNEBOX_UID} --home-dir /data --no-create-home --shell /bin/sh tunebox \
 && mkdir -p /data/runs /data/cache /etc/tunebox \
 && chown -R tunebox:tunebox /data \
 && chmod 0755 /usr/local/bin/tunebox-entrypoint /usr/local/bin/tunebox-pipeline /usr/local/bin/tunebox-check-submission
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    TUNEBOX_CACHE=/data/cache \
    LOCAL_DEFAULT_PATH=/data/output

# What this image is: late in the file, so a new commit only rebuilds these two small layers.
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG IMAGE_TAG=tunebox:cpu-ms2.9
ARG CREATED=unknown
ARG LICENSES=Apache-2.0
LABEL org.opencontainers.image.title="tunebox" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.description="LoRA fine-tuning jobs for MindSpore + MindFormers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      tunebox.stack="${STACK}" \
      tunebox.python="${PYTHON}" \
      tunebox.mindspore="${MINDSPORE_VERSION}" \
      tunebox.mindformers="${MINDFORMERS_VERSION}" \
      tunebox.cann="${CANN_VERSION}"
# The same facts as a file, for tunebox/manifest.py (a process cannot read its image's labels).
# Keys are the label names (plus tunebox.image, the tag it was built as); a test checks they agree.
RUN python -c 'import json, os; e = os.environ; json.dump({"org.opencontainers.image.title": "tunebox", "org.opencontainers.image.created": e["CREATED"], "org.opencontainers.image.licenses": e["LICENSES"], "org.opencontainers.image.version": e["VERSION"], "org.opencontainers.image.revision": e["REVISION"], "org.opencontainers.image.source": e["SOURCE"], "org.opencontainers.image.base.name": e["BASE_IMAGE"], "tunebox.stack": e["STACK"], "tunebox.python": e["PYTHON"], "tunebox.mindspore": e["MINDSPORE_VERSION"], "tunebox.mindformers": e["MINDFORMERS_VERSION"], "tunebox.cann": e["CANN_VERSION"], "tunebox.image": e["IMAGE_TAG"]}, open("/etc/tunebox/image.json", "w"), indent=1, sort_keys=True)'
ENV TUNEBOX_IMAGE=${IMAGE_TAG}

USER ${TUNEBOX_UID}:${TUNEBOX_UID}
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/tunebox-entrypoint"]
CMD ["python", "-m", "jobs.env"]
