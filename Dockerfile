# llm-gateway container: build on Debian 12 with its own packages, run on bookworm-slim.
#   docker build -t llm-gateway .
#   docker run --rm -p 8080:8080 -e AZURE_OPENAI_ENDPOINT=... -e AZURE_OPENAI_API_KEY=... llm-gateway
#   docker run --rm -p 8080:8080 -v $PWD/config:/etc/llm-gateway:ro llm-gateway --config /etc/llm-gateway/example.yaml
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

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libyaml-cpp0.7 \
      libboost-url1.81.0 libprometheus-cpp-core1.0 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/llm-gateway /usr/local/bin/llm-gateway
COPY config /etc/llm-gateway
# Inside a container the embedded default must listen on all interfaces to be reachable.
ENV LLM_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/llm-gateway"]
