"""Python grpcio, unmodified, over keymint's TLS port: the health check and a ListProjects call, as generic unary
calls with hand-encoded bytes (no generated stubs needed).

argv: target (host:port), CA file, bearer token, and optionally a client certificate and its key (mutual TLS).
Prints the ListProjects response's bytes in hex, for the Rust test to decode.
"""

import sys

import grpc


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    target, ca, token = sys.argv[1:4]
    chain = key = None
    if len(sys.argv) > 5:
        chain, key = read(sys.argv[4]), read(sys.argv[5])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=key, certificate_chain=chain
    )
    with grpc.secure_channel(target, credentials) as channel:
        # No serializers: requests and responses are raw bytes.
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        # An empty HealthCheckRequest (the whole server); SERVING is field 1 = 1.
        reply = check(b"", timeout=10)
        assert reply == b"\x08\x01", f"health: {reply!r}"
        list_projects = channel.unary_unary("/keymint.management.v1.ManagementService/ListProjects")
        reply = list_projects(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10)
        print(reply.hex())


if __name__ == "__main__":
    main()
