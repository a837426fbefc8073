"""uvicorn's httptools protocol, with the one answer it writes itself made ours.

A request uvicorn cannot parse (a bad request line, a malformed header, a broken chunked
body) never reaches the app: uvicorn writes ``400 Invalid HTTP request received.`` as plain
text and closes the connection. uvicorn takes the protocol class as configuration
(``Config(http=...)``), so this subclass writes that refusal as our JSON error envelope;
everything else is uvicorn's own code.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from schemas import error_body

__all__ = ["EnvelopeHttpToolsProtocol"]


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose parse-error 400 is an OpenAI error envelope."""

    def send_400_response(self, msg: str) -> None:
        """The 400 for a request that could not be parsed, then close (as uvicorn does)."""
        body = error_body(400, "invalid_http_request", msg)
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
