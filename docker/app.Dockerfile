# The shortener service. Build from the repository root:
#   docker build -f docker/app.Dockerfile -t shortener:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shortener \
 && cp target/release/shortener /shortener

# distroless/cc: glibc and libgcc only, no shell; "nonroot" is uid 65532, matching the
# runAsUser the operator sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /shortener /usr/local/bin/shortener
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/shortener"]
CMD ["serve"]
