# podflow's container image: one image for both roles (the first argument picks collector, exporter
# or standalone). Build:  docker build -t <registry>/podflow:<version> .
# Both architectures at once (docs/install.md): docker buildx build --platform linux/amd64,linux/arm64 …
# .ci/image-check repeats the build stage's steps in a temporary copy of the tree (CI has no Docker).
ARG NODE_VERSION=20

# ---- build: dependencies, the native BPF addon (native/) and the TypeScript --------------------
FROM node:${NODE_VERSION}-bookworm AS build
# python3, make and g++ compile the native addon and any dependency without a prebuilt binary.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# node-gyp compiles against the image's own Node headers instead of downloading them.
ENV npm_config_nodedir=/usr/local
WORKDIR /src
COPY package.json package-lock.json ./
COPY tsconfig.json tsconfig.build.json ./
COPY native/ native/
COPY bin/ bin/
COPY cmd/ cmd/
COPY collector/ collector/
COPY exporter/ exporter/
COPY shared/ shared/
COPY view/ view/
# `npm ci` runs the package's install script (builds native/) and prepare (tsc to dist/, and the
# built-in view's page to dist/view/).
RUN npm ci --no-audit --no-fund
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime ------------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim
# OCI image annotations (opencontainers image-spec, annotations.md), read by registries and
# scanners. The release build passes what only it knows:
#   --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#   --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) --build-arg SOURCE=<repository URL>
# An ARG declared before the first FROM is visible inside a stage only when declared again.
ARG NODE_VERSION
ARG VERSION=0.1.0
ARG REVISION=
ARG CREATED=
ARG SOURCE=
LABEL org.opencontainers.image.title="podflow" \
      org.opencontainers.image.description="Kubernetes network-traffic monitor: pod-to-pod, zone-to-zone and internet traffic from conntrack, as Prometheus metrics and HTTP logs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/node:${NODE_VERSION}-bookworm-slim"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/native/binding.gyp ./native/binding.gyp
COPY --from=build /src/native/build/Release/podflow_bpf.node ./native/build/Release/podflow_bpf.node
# The exporter (and standalone without conntrack) runs as this unprivileged user. The collector
# reads conntrack, which needs CAP_NET_ADMIN: Kubernetes grants added capabilities only to root, so
# the Helm chart runs the collector with runAsUser 0, all capabilities dropped but NET_ADMIN (BPF in
# Cilium mode), no privilege escalation and a read-only root filesystem. With plain Docker:
#   docker run --network host --user 0 --cap-drop ALL --cap-add NET_ADMIN <image> collector
RUN groupadd --system --gid 65532 podflow \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent podflow
USER 65532:65532
EXPOSE 9470 9471
ENTRYPOINT ["node", "/app/bin/podflow.js"]
CMD ["--help"]
