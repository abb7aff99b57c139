"""The proxy's own errors. Each carries the status the visitor gets; nothing else leaks.

    ProxyError
    ├── BadRequest              400  the request cannot be forwarded (Host, CR/LF/NUL)
    ├── MethodNotAllowed        405  TRACE and CONNECT are never forwarded
    ├── Overloaded              503  too many requests in flight (with Retry-After)
    └── UpstreamError           502  the origin failed us
        ├── UpstreamUnavailable 502  refused, reset, unreachable
        ├── UpstreamProtocolError 502  invalid status, framing or headers from the origin
        └── UpstreamTimeout     504  no answer within the configured deadlines

Library exceptions are translated into these at the upstream boundary, once per client:
``proxy.upstream_h1`` (sockets and the httptools parser) and ``proxy.upstream``'s
``translate_errors`` (aiohttp). Nothing past ``Upstream.send`` sees another exception type.
"""

from __future__ import annotations


class ProxyError(Exception):
    status: int = 500
    kind: str = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ProxyError):
    status, kind = 400, "bad_request"


class MethodNotAllowed(ProxyError):
    status, kind = 405, "method_not_allowed"


class Overloaded(ProxyError):
    status, kind = 503, "overloaded"


class UpstreamError(ProxyError):
    status, kind = 502, "upstream_error"


class UpstreamUnavailable(UpstreamError):
    kind = "upstream_unavailable"


class UpstreamProtocolError(UpstreamError):
    kind = "upstream_protocol_error"


class UpstreamTimeout(UpstreamError):
    status, kind = 504, "upstream_timeout"
