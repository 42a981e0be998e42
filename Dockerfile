# The rwsplit demo app, configured by YAML with ${ENV} placeholders.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --example demo \
 && cp target/release/examples/demo /rwsplit-demo

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /rwsplit-demo /usr/local/bin/rwsplit-demo
COPY examples/config/dev.yaml /etc/rwsplit/config.yaml
USER nobody
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/rwsplit-demo"]
CMD ["--config", "/etc/rwsplit/config.yaml", "--listen", "0.0.0.0:3000", "--no-tour"]
