# edge-registrar: one image, one entrypoint; the Helm chart runs `webhook` and `sync`.
#   docker build -t <your-registry>/edge-registrar:0.1.0 .
ARG NODE_VERSION=24

# TypeScript to JavaScript, with the dev dependencies.
FROM node:${NODE_VERSION}-alpine AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the base image already is Node 24, so the pinned `node` dev dependency and
# the `prepare` build are not needed here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json

# Production dependencies only.
FROM node:${NODE_VERSION}-alpine AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:${NODE_VERSION}-alpine
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# `edge-registrar` on PATH too, for `kubectl exec ... -- edge-registrar dlq list`.
RUN chmod 0755 /app/dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/edge-registrar
# Numeric, so the kubelet can verify runAsNonRoot; matches the chart's podSecurityContext.
USER 10001:10001
EXPOSE 8443 9090 9091
ENTRYPOINT ["node", "/app/dist/cli.js"]
