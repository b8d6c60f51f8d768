#!/usr/bin/env bash
# ONLY FOR MACHINES THAT CANNOT PULL FROM A CONTAINER REGISTRY (like this project's own).
#
# kadr's Dockerfile starts from two ordinary upstream images, which any machine with registry
# access pulls by itself:
#   debian:bookworm-slim   the runtime stage (and the stage that unpacks the ONNX Runtime wheels)
#   rust:1-bookworm        the build stage
#   redis:7-bookworm       Redis, in compose.yaml
# This script builds local images under those same names from what the machine has: Debian's
# packages (debootstrap, from the Debian mirror apt uses) and the installed Rust toolchain. It
# skips an image that exists already. Crates and wheels are still fetched by the build itself
# from crates.io and PyPI.
set -euo pipefail
say() { printf '\033[1mdocker-base:\033[0m %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d)
trap '$SUDO rm -rf "$WORK"' EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have debian:bookworm-slim; then
    command -v debootstrap >/dev/null || { say "installing debootstrap"; $SUDO apt-get install -y -qq debootstrap >/dev/null; }
    say "debootstrap bookworm (minbase) from $MIRROR"
    $SUDO debootstrap --variant=minbase bookworm "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    $SUDO rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/lib/apt/lists/"*
    # This machine's own extra CA certificates (a TLS-intercepting proxy's, say), so that builds
    # in these images reach crates.io and PyPI as the machine itself does; they take effect
    # where an image installs ca-certificates.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        $SUDO mkdir -p "$WORK/root/usr/local/share/ca-certificates"
        $SUDO cp /usr/local/share/ca-certificates/*.crt "$WORK/root/usr/local/share/ca-certificates/"
    fi
    # As the official image: apt keeps no downloaded packages.
    echo 'APT::Keep-Downloaded-Packages "false";' | $SUDO tee "$WORK/root/etc/apt/apt.conf.d/docker-clean" >/dev/null
    # pip carries its own CA list; point it at the system's, as the machine's own pip is.
    $SUDO tar -C "$WORK/root" -c . | docker import -c 'CMD ["bash"]' \
        -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - debian:bookworm-slim >/dev/null
    say "made debian:bookworm-slim"
fi

if ! have rust:1-bookworm; then
    TOOLCHAIN=$(rustc --print sysroot)
    say "making rust:1-bookworm from $TOOLCHAIN ($(rustc --version))"
    mkdir -p "$WORK/rust/toolchain/bin"
    cp "$TOOLCHAIN/bin/rustc" "$TOOLCHAIN/bin/cargo" "$WORK/rust/toolchain/bin/"
    cp -a "$TOOLCHAIN/lib" "$WORK/rust/toolchain/lib"
    # Only the host target's standard library is needed.
    find "$WORK/rust/toolchain/lib/rustlib" -mindepth 1 -maxdepth 1 -type d \
        ! -name "$(rustc -vV | sed -n 's/^host: //p')" ! -name etc -exec rm -rf {} +
    cat > "$WORK/rust/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
# What the official image's base (buildpack-deps) gives a Rust build: a C toolchain and CA roots.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev make ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH
DOCKERFILE
    docker build -q -t rust:1-bookworm "$WORK/rust" >/dev/null
    say "made rust:1-bookworm"
fi
if ! have redis:7-bookworm; then
    say "making redis:7-bookworm from Debian's redis-server"
    mkdir -p "$WORK/redis"
    cat > "$WORK/redis/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
USER redis
WORKDIR /var/lib/redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
DOCKERFILE
    docker build -q -t redis:7-bookworm "$WORK/redis" >/dev/null
    say "made redis:7-bookworm"
fi
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-bookworm|redis:7-bookworm) ' >&2
