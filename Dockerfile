# The controller's image: `make image`, or see e2e/README.md to build it and run it in kind.
#
# Both stages start from the same base because /opt/venv/bin/python is a symlink to the base's
# interpreter. The tag pins Python's patch release and Debian's; to pin the bytes too, append the
# multi-platform index digest that `docker buildx imagetools inspect python:3.11.17-slim-bookworm`
# prints on its "Digest:" line:
#   docker build --build-arg BASE_IMAGE=python:3.11.17-slim-bookworm@sha256:<digest> .
ARG BASE_IMAGE=python:3.11.17-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# What builds our wheel, pinned by hash like everything else, in a venv of its own that stays in
# this stage.
COPY requirements-build.lock /tmp/requirements-build.lock
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements-build.lock

# The runtime venv never gets pip or setuptools: the base's pip installs into it from outside.
# Wheels only: the slim base has no compiler, and every locked package ships Linux wheels.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: -r /tmp/requirements.lock

WORKDIR /src
COPY pyproject.toml ./
COPY apis ./apis
COPY controller ./controller
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/wheels/*.whl

FROM ${BASE_IMAGE}
# The base ships pip, setuptools and wheel (and ensurepip's copies of them); the controller runs
# without any of them, so the image does not carry them.
RUN python -m pip uninstall --yes pip setuptools wheel \
 && rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/lib/python3.11/ensurepip
COPY --from=build /opt/venv /opt/venv
# The Deployment mounts the root filesystem read-only: nothing is written next to the sources,
# which pip already compiled in the build stage.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/opt/venv/bin/stormservice-controller"]
