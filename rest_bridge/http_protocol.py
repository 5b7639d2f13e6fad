"""The bridge's HTTP/1.1 protocol: uvicorn's httptools one, with errors in the OpenAI envelope.

httptools (the C parser, llhttp) costs the bridge much less CPU per request than h11
(bench/README.md). It is stricter about what it can parse: an unknown method such as `FOO`, or a
malformed request line or header, is refused by the parser before any app code runs. uvicorn
answers those with a plain-text 400; this subclass answers with the same JSON error envelope as
every other error of the bridge (SPEC §2), so clients always get one shape.
"""

from __future__ import annotations

from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rest_bridge import errors

_BODY: Final = errors.ApiError(
    400, "Invalid HTTP request: the request line or headers cannot be parsed.", code="invalid_http"
).body()


class BridgeHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` whose parse-error answer is the OpenAI error envelope."""

    def send_400_response(self, msg: str) -> None:
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"cache-control: no-store\r\n",
                b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _BODY,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
