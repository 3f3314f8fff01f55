"""How the gateway decodes images beyond Keras' reference: `clothing_preproc`'s three options.

- `draft`: JPEGs decoded by libjpeg at 1/2, 1/4 or 1/8 scale (still at least the model's input
  size), about 3× less CPU on phone photos, the pixels a few levels off Keras';
- `exif_orientation`: the picture turned upright by its EXIF Orientation tag, as phones show it
  (Keras ignores the tag, so a portrait photo reaches the model sideways);
- `background`: transparent images composited onto this colour (Keras drops the alpha channel and
  shows whatever colours the transparent pixels hold).

`DecodeOptions` is the operator's part of the settings: the defaults (all off: Keras-exact) and
which options a client may set per request. `DecodeOptions.for_request` reads a request's query
(and, for KServe v2, its `parameters` object) into the `Decoding` that shapes that request;
`Classifier.classify(…, decoding=…)` carries it to the decode threads, and every answer reports it
(`report`, `header_value`, `v2_parameters`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from clothing_preproc import PreprocessConfig
from gateway.errors import BadRequest

OPTIONS = ("draft", "exif_orientation", "background")
# Clients may set these unless the operator says otherwise: they change only how the client's own
# file is read (the client is the one who knows whether its photo's orientation tag or transparent
# pixels mean something) and cost a fraction of the decode. `draft` is not among them: it trades
# Keras-exactness for the gateway's CPU, which is the operator's to spend.
DEFAULT_PER_REQUEST = ("exif_orientation", "background")
HEADER = "X-Preprocessing"

BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
_TRIPLE = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3})")

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Decoding:
    """The options that shape one request's decode (all off: bit-identical to Keras)."""

    draft: bool = False
    exif_orientation: bool = False
    background: Colour | None = None

    def apply(self, config: PreprocessConfig) -> PreprocessConfig:
        """`config` with these options (the family, size and limits kept)."""
        return _applied(config, self)

    def report(self, config: PreprocessConfig) -> dict[str, object]:
        """The answers' `preprocessing` block: these options and the preprocessing they applied to."""
        height, width = config.target_size
        return {
            "draft": self.draft,
            "exif_orientation": self.exif_orientation,
            "background": None if self.background is None else colour_hex(self.background),
            "family": config.family,
            "size": [height, width],
        }

    def header_value(self, config: PreprocessConfig) -> str:
        """The same as the `X-Preprocessing` header writes it, for the routes whose body is another
        server's shape: `draft=false, exif_orientation=true, background=none, family=xception,
        size=299x299` (size is height x width)."""
        height, width = config.target_size
        background = "none" if self.background is None else colour_hex(self.background)
        return (
            f"draft={str(self.draft).lower()}, exif_orientation={str(self.exif_orientation).lower()}, "
            f"background={background}, family={config.family}, size={height}x{width}"
        )

    def v2_parameters(self, config: PreprocessConfig) -> dict[str, object]:
        """The same as a KServe v2 answer's `parameters` (flat: booleans and strings only)."""
        height, width = config.target_size
        return {
            "draft": self.draft,
            "exif_orientation": self.exif_orientation,
            "background": "none" if self.background is None else colour_hex(self.background),
            "family": config.family,
            "size": f"{height}x{width}",
        }


@lru_cache(maxsize=64)
def _applied(config: PreprocessConfig, decoding: Decoding) -> PreprocessConfig:
    # A handful of combinations per model: built once each, not validated again per request.
    return replace(
        config,
        draft=decoding.draft,
        exif_orientation=decoding.exif_orientation,
        background=decoding.background,
    )


@dataclass(frozen=True)
class DecodeOptions:
    """The operator's part of the settings: the defaults, and the options a client may set."""

    defaults: Decoding = field(default_factory=Decoding)
    per_request: tuple[str, ...] = DEFAULT_PER_REQUEST

    def for_request(
        self, query: Mapping[str, str], parameters: Mapping[str, Any] | None = None
    ) -> Decoding:
        """The options of one request: the defaults, changed by the query (`draft=true`,
        `exif_orientation=false`, `background=ffffff`) or a KServe v2 request's `parameters`
        (`{"draft": true, "background": "#ffffff"}`). An option the operator does not let clients
        set, or a bad value, is a 400 naming it."""
        given: dict[str, Any] = {}
        for name in OPTIONS:
            in_query = query.get(name)
            in_parameters = None if parameters is None else parameters.get(name)
            if in_query is None and in_parameters is None:
                continue
            if in_query is not None and in_parameters is not None:
                raise BadRequest(f"{name} is given both in the query and in the parameters; give it once")
            if name not in self.per_request:
                allowed = ", ".join(self.per_request) or "none"
                raise BadRequest(
                    f"{name} cannot be set per request on this gateway (options clients may set: {allowed})"
                )
            given[name] = _value(name, in_query if in_query is not None else in_parameters)
        return replace(self.defaults, **given) if given else self.defaults


def _value(name: str, raw: object) -> object:
    if name == "background":
        colour = parse_colour(raw) if isinstance(raw, str) else None
        if colour is None and not (isinstance(raw, str) and raw.strip().lower() == "none"):
            raise BadRequest(f"background={str(raw)[:20]!r}: a colour rrggbb in hex (ffffff), or none")
        return colour
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in BOOLEANS:
        return BOOLEANS[raw.lower()]
    raise BadRequest(f"{name}={str(raw)[:20]!r}: true or false")


def parse_colour(text: str) -> Colour | None:
    """`#rrggbb`, `rrggbb` or `r,g,b` (0-255 each) -> (r, g, b); None when it is none of them."""
    text = text.strip().replace(" ", "")
    if m := _HEX.fullmatch(text):
        value = int(m.group(1), 16)
        return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)
    if (m := _TRIPLE.fullmatch(text)) and all(0 <= int(c) <= 255 for c in m.groups()):
        r, g, b = (int(c) for c in m.groups())
        return (r, g, b)
    return None


def colour_hex(colour: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def parse_per_request(text: str) -> tuple[str, ...] | None:
    """GATEWAY_REQUEST_OPTIONS: `none`, `all` or option names, comma-separated; None if unknown names."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words == ["none"]:
        return ()
    if words == ["all"]:
        return OPTIONS
    if not words or any(w not in OPTIONS for w in words):
        return None
    return tuple(name for name in OPTIONS if name in words)
