"""The gRPC transport: `service` translates the proto to the core's plain types and back, its
errors through `lookalike.server.error_codes`. Health and reflection are grpcio's own."""
