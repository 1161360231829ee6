# llm-gateway container: built on Debian 12 with its own packages; the runtime image holds only
# the binary, the shared libraries it loads, the CA bundle, a non-root user and the default
# configuration (no shell, no package manager; README "Deploying" has the measured size).
#   docker build -t llm-gateway --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 8080:8080 -e AZURE_OPENAI_ENDPOINT=... -e AZURE_OPENAI_API_KEY=... llm-gateway
#   docker run --rm -p 8080:8080 -v $PWD/config:/etc/llm-gateway:ro llm-gateway --config /etc/llm-gateway/example.yaml
# scripts/test-image.sh builds it with buildah and checks the result.
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build pkg-config \
      ca-certificates libboost1.81-dev libboost-url1.81-dev libssl-dev nlohmann-json3-dev \
      libyaml-cpp-dev prometheus-cpp-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY include include
COPY src src
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMGW_TESTS=OFF \
 && cmake --build /build --target llm-gateway \
 && strip /build/llm-gateway
# The runtime root. The libraries are exactly those the dynamic loader resolves for the binary
# (ldd), copied under the paths it resolves them at, so nothing else of Debian comes along. Name
# lookups need no NSS plug-ins: glibc 2.36 has files and dns built in. The user exists only as a
# passwd/group line; its home does not exist because nothing is ever written there.
RUN set -eu; \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/proc /rootfs/dev /rootfs/sys; \
    mkdir -m 1777 /rootfs/tmp; \
    cp /build/llm-gateway /rootfs/usr/local/bin/; \
    for lib in $(ldd /build/llm-gateway | grep -o '/[^ ]*'); do cp -L --parents "$lib" /rootfs; done; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    echo 'root:x:0:0:root:/nonexistent:/sbin/nologin' > /rootfs/etc/passwd; \
    echo 'llm-gateway:x:65532:65532:llm-gateway:/nonexistent:/sbin/nologin' >> /rootfs/etc/passwd; \
    printf 'root:x:0:\nllm-gateway:x:65532:\n' > /rootfs/etc/group; \
    echo 'hosts: files dns' > /rootfs/etc/nsswitch.conf

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
COPY --from=build /rootfs/ /
COPY config /etc/llm-gateway
LABEL org.opencontainers.image.title="llm-gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway to Azure OpenAI and OpenAI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# Inside a container the embedded default must listen on all interfaces to be reachable. OpenSSL
# would look for the CA bundle under /usr/lib/ssl, which this image leaves out.
ENV LLM_GATEWAY_LISTEN=0.0.0.0:8080 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
# Numeric, so that runAsNonRoot admission can verify it without reading /etc/passwd.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/llm-gateway", "--healthcheck", "http://127.0.0.1:8080/healthz"]
# The gateway itself handles SIGTERM (drain, then exit 0), also as PID 1: no init is needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/llm-gateway"]
