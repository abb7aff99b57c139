"""The visitor context: pure functions that turn one request into what rules match against.

Start at :func:`proxy.context.build.build_context`; README.md in this folder lists every
attribute rules can reference.
"""

from proxy.context.build import build_context, privacy
from proxy.context.geo import GeoReader, open_reader
from proxy.context.identity import (
    VisitorState,
    advance,
    decode,
    encode,
    opt_out,
    read_cookie,
    set_cookie_header,
)
from proxy.context.model import ATTRIBUTE_NAMES, RequestFacts, VisitorContext
from proxy.context.settings import ContextSettings, parse_settings
from proxy.context.signals import NO_SIGNALS, SignalSnapshot, parse_signal_hash

__all__ = [
    "ATTRIBUTE_NAMES",
    "NO_SIGNALS",
    "ContextSettings",
    "GeoReader",
    "RequestFacts",
    "SignalSnapshot",
    "VisitorContext",
    "VisitorState",
    "advance",
    "build_context",
    "decode",
    "encode",
    "open_reader",
    "opt_out",
    "parse_settings",
    "parse_signal_hash",
    "privacy",
    "read_cookie",
    "set_cookie_header",
]
