"""One call at a time from Python's grpcio, as an outside client calls keymint: one unary method, its request
encoded by keymint-bench, called again and again on one channel, each call timed. No stubs: grpcio sends the
request bytes as they are and hands back the answer's bytes.

Usage: python grpcio_one_at_a_time.py ADDRESS METHOD_PATH TOKEN REQUEST_BASE64 CALLS
Prints one JSON line: {"latencies_us": [...], "seconds": ..., "errors": ...}.
"""

import base64
import json
import sys
import time

import grpc

WARM_UP = 50


def main() -> None:
    address, method, token, request_b64, calls = sys.argv[1:6]
    request = base64.b64decode(request_b64)
    metadata = [("authorization", f"Bearer {token}")]
    latencies, errors = [], 0
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method)
        # The connection, the server's caches and this interpreter's first-call costs are not what is measured.
        for _ in range(WARM_UP):
            call(request, metadata=metadata)
        started = time.perf_counter()
        for _ in range(int(calls)):
            one = time.perf_counter()
            try:
                call(request, metadata=metadata)
            except grpc.RpcError:
                errors += 1
            latencies.append(round((time.perf_counter() - one) * 1e6))
        seconds = time.perf_counter() - started
    print(json.dumps({"latencies_us": latencies, "seconds": seconds, "errors": errors}))


if __name__ == "__main__":
    main()
