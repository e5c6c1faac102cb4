"""A recording reverse proxy for S3 traffic, loopback only.

    python tests/interop/s3_wiretap.py --listen-port 9100 --upstream http://127.0.0.1:9000 --log wire.jsonl

Every request is forwarded unchanged to the upstream (same method, path, query, Host header and body
framing: a chunked request stays chunked) and one JSON line is appended to --log with what the client
sent: method, target, every header (the Authorization value shortened to its credential scope and
SignedHeaders, never the signature), body length, whether the body is aws-chunked and the start and
end of it (where the chunk signatures and trailers are), and the status and headers the upstream
answered. `Expect: 100-continue` is answered here (and recorded) rather than forwarded.

It exists to show which headers and body encodings an SDK really puts on the wire, for the
harnesses in this directory (tests/interop/README.md). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
AWS_CHUNK = re.compile(rb"^[0-9a-fA-F]+(;chunk-signature=[0-9a-f]{64})?\r\n")


def summarize_authorization(value: str) -> str:
    """Keep the algorithm, credential scope and signed header list; drop the signature."""
    match = re.match(r"(\S+) Credential=([^,]+),\s*SignedHeaders=([^,]+)", value)
    if not match:
        return value.split(" ", 1)[0]
    scope = match.group(2).split("/", 1)[-1]
    return f"{match.group(1)} scope={scope} SignedHeaders={match.group(3)}"


def read_chunked(rfile) -> tuple[list[bytes], bytes]:
    """Read an HTTP/1.1 chunked body; return its chunks and the raw trailer section."""
    chunks: list[bytes] = []
    while True:
        line = rfile.readline(65537)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        chunks.append(rfile.read(size))
        rfile.readline()
    trailer = b""
    while True:
        line = rfile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        trailer += line
    return chunks, trailer


class Wiretap(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 9000)
    log_path: str = "wire.jsonl"
    lock = threading.Lock()

    def log_message(self, format: str, *args) -> None:
        pass

    def handle_expect_100(self) -> bool:
        self.expected_continue = True
        return super().handle_expect_100()

    def relay(self) -> None:
        self.expected_continue = getattr(self, "expected_continue", False)
        headers = list(self.headers.items())
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        http_trailer = b""
        if chunked:
            chunks, http_trailer = read_chunked(self.rfile)
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        record: dict = {
            "t": round(time.time(), 3),
            "method": self.command,
            "target": self.path,
            "headers": {},
            "expect_100_continue": self.expected_continue,
            "transfer_encoding_chunked": chunked,
            "body_bytes": len(body),
        }
        for name, value in headers:
            lower = name.lower()
            record["headers"][lower] = summarize_authorization(value) if lower == "authorization" else value
        if AWS_CHUNK.match(body[:200]):
            record["aws_chunked_head"] = body[:120].decode("latin-1")
            record["aws_chunked_tail"] = body[-240:].decode("latin-1")
        if http_trailer:
            record["http_trailer"] = http_trailer.decode("latin-1")
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() in HOP_BY_HOP or (chunked and name.lower() == "transfer-encoding"):
                    continue
                connection.putheader(name, value)
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                for piece in (body,) if body else ():
                    connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                connection.send(b"0\r\n" + http_trailer + b"\r\n")
            else:
                connection.endheaders(body if body else None)
            response = connection.getresponse()
            payload = response.read()
            record["status"] = response.status
            record["response_headers"] = {k.lower(): v for k, v in response.getheaders()}
            if response.status >= 300 and payload:
                record["response_body_head"] = payload[:300].decode("utf-8", "replace")
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() in HOP_BY_HOP or name.lower() in ("transfer-encoding", "content-length"):
                    continue
                self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", response.getheader("Content-Length", "0"))
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            connection.close()
            with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record, sort_keys=True) + "\n")
            self.expected_continue = False

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = relay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the S3 server")
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    upstream = urlsplit(args.upstream)
    if upstream.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the upstream must be on loopback")
    Wiretap.upstream = (upstream.hostname, upstream.port or 80)
    Wiretap.log_path = args.log
    server = ThreadingHTTPServer(("127.0.0.1", args.listen_port), Wiretap)
    server.daemon_threads = True
    print(json.dumps({"listening": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
