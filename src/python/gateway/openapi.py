"""The OpenAPI 3.1 description of the gateway's HTTP API, served at /openapi.json.

Every bound in it is the constant or setting the code enforces (`gateway/schema_test.py` runs
schemathesis against a live gateway to keep the two in step).
"""

from __future__ import annotations

import copy
from typing import Any

from gateway import errors
from gateway.api_keys import is_open
from gateway.base64_images import encoded_length, text_limit
from gateway.decode_options import HEADER as PREPROCESSING_HEADER
from gateway.decode_options import DecodeOptions
from gateway.inputs import LOGITS_VALUES, TOP_K_DEFAULT, TOP_K_MAX
from gateway.metrics import STAGES
from gateway.settings import ServingTarget
from gateway.versions import LABEL_PATTERN, MAX_VERSION, MODEL_LABEL_HEADER, MODEL_VERSION_HEADER

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": status_meaning(s), "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }


def status_meaning(status: int) -> str:
    """What an error status of the gateway means: the meanings of its codes in `errors.ERRORS`."""
    codes = {kind.code: kind.meaning for kind in errors.ERRORS if kind.status == status}
    retry = " (see Retry-After)" if any(k.retry_after for k in errors.ERRORS if k.status == status) else ""
    return "; ".join(f"`{code}`: {meaning}" for code, meaning in codes.items()) + retry


_CLASSIFY_ERRORS = (400, 404, 413, 415, 422, 429, 502, 503, 504)


def version_parameters() -> list[dict[str, Any]]:
    """`?version=N` and `?label=L`, on every classification route (gateway/versions.py)."""
    return [
        {
            "name": "version",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
            "description": (
                "Ask TF Serving for this version of the model (404 if it serves no such version). "
                "Not with `label`, nor with a version or label in the path"
            ),
        },
        {
            "name": "label",
            "in": "query",
            "schema": {"type": "string", "pattern": f"^{LABEL_PATTERN.pattern}$"},
            "description": (
                "Ask TF Serving for the version this label names (its model config's version_labels; "
                "404 if none). Without version or label the canary split (GATEWAY_CANARY_PERCENT) or "
                "TF Serving's latest version chooses"
            ),
        },
    ]


# A version in a path (TF Serving's /versions/{version}, KServe v2's): a number, in digits.
_VERSION_IN_PATH = {"type": "string", "pattern": "^[0-9]{1,19}$"}

_VERSION_HEADERS = {
    MODEL_VERSION_HEADER: {"description": "The model version that answered", "schema": {"type": "string"}},
    MODEL_LABEL_HEADER: {
        "description": "The version label the request went by (its `label`, or the canary split's)",
        "schema": {"type": "string"},
    },
}


def decode_parameters(decoding: DecodeOptions) -> list[dict[str, Any]]:
    """The query options a client may set per request (GATEWAY_REQUEST_OPTIONS), with their defaults."""
    defaults = decoding.defaults
    described = {
        "draft": (
            {"type": "string", "enum": ["true", "false", "1", "0"], "default": str(defaults.draft).lower()},
            "Decode a JPEG at 1/2, 1/4 or 1/8 scale (about 3× less CPU on photos; not Keras-exact)",
        ),
        "exif_orientation": (
            {
                "type": "string",
                "enum": ["true", "false", "1", "0"],
                "default": str(defaults.exif_orientation).lower(),
            },
            "Turn the photo upright by its EXIF Orientation tag first",
        ),
        "background": (
            {"type": "string", "pattern": "^(#?[0-9a-fA-F]{6}|none)$"},
            "Composite a transparent image onto this colour (rrggbb, hex); none: drop alpha as Keras",
        ),
    }
    return [
        {"name": name, "in": "query", "schema": described[name][0], "description": described[name][1]}
        for name in decoding.per_request
    ]


_PREPROCESSING_HEADER: dict[str, Any] = {
    PREPROCESSING_HEADER: {
        "description": (
            "The decode options that shaped the answer: `draft=false, exif_orientation=false, "
            "background=none, family=xception, size=299x299` (size: height x width)"
        ),
        "schema": {"type": "string"},
    }
}


_ANSWER_HEADERS = {**_PREPROCESSING_HEADER, **_VERSION_HEADERS}


def openapi_schema(settings: ServingTarget, decoding: DecodeOptions | None = None) -> dict[str, Any]:
    labels = list(settings.labels)
    # The query options of every classification route: decode options and the version choice.
    decode_options = decode_parameters(decoding or DecodeOptions()) + version_parameters()
    scores = {
        "type": "object",
        "description": "One number per class, keyed by class name",
        "additionalProperties": {"type": "number"},
        "example": {label: 0.0 for label in labels[:3]},
    }
    options = [
        {
            "name": "top_k",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": TOP_K_MAX, "default": TOP_K_DEFAULT},
            "description": "How many of the most probable classes to list in `top` (at most all of them)",
        },
        {
            "name": "logits",
            "in": "query",
            "schema": {"type": "string", "enum": list(LOGITS_VALUES), "default": "false"},
            "description": "Also return the model's raw scores (logits): true or 1",
        },
        *decode_options,
    ]
    max_bytes = settings.limits.max_bytes
    image_file = {
        "type": "string",
        "format": "binary",
        "description": f"An image file of at most {max_bytes} bytes and {settings.limits.max_pixels} pixels",
    }
    url = {"type": "string", "format": "uri", "minLength": 1, "description": "http(s) image URL"}
    b64 = {
        "type": "string",
        "minLength": 1,
        "maxLength": text_limit(max_bytes),
        "description": (
            f"The image file in base64 (standard or URL-safe alphabet, padding optional, MIME line "
            f"breaks and a data: URL prefix allowed): at most {encoded_length(max_bytes)} base64 "
            f"characters, decoding to at most {max_bytes} bytes and {settings.limits.max_pixels} pixels"
        ),
    }
    image_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ImageRequest"}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"], "properties": {"image": image_file}}
            },
            "image/*": {"schema": image_file},
            "application/octet-stream": {"schema": image_file},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clothing classifier gateway",
            "version": "1",
            "description": (
                "Classifies clothing images with a Keras model behind TF Serving. Images come as a URL "
                "(fetched with an SSRF policy), base64 in JSON, an upload or a raw body; every error is "
                '`{"error": {"code", "message"}}`.'
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "The course's endpoint: an image URL (or base64) to raw scores per class",
                    "parameters": decode_options,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ImageRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Raw model scores (logits) by class",
                            "headers": _ANSWER_HEADERS,
                            "content": {"application/json": {"schema": scores}},
                        },
                        **_errors(*_CLASSIFY_ERRORS),
                    },
                }
            },
            "/v1/classify": {
                "post": {
                    "summary": "Classify one image: a URL, base64 JSON, an upload or a raw image body",
                    "parameters": options,
                    "requestBody": image_body,
                    "responses": {
                        "200": {
                            "description": "Probabilities, top classes and timings",
                            "headers": _ANSWER_HEADERS,
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Single"}}
                            },
                        },
                        **_errors(*_CLASSIFY_ERRORS),
                    },
                }
            },
            "/v1/classify/batch": {
                "post": {
                    "summary": f"Classify up to {settings.max_batch} images in one model call",
                    "parameters": options,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["images"],
                                    "properties": {
                                        "images": {
                                            "type": "array",
                                            "items": image_file,
                                            "minItems": 1,
                                            "maxItems": settings.max_batch,
                                        }
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": (
                                "One result per image, in request order: its scores, or the error "
                                "that image met (the others are answered all the same)"
                            ),
                            "headers": _ANSWER_HEADERS,
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}
                            },
                        },
                        **_errors(*_CLASSIFY_ERRORS),
                    },
                }
            },
            **_v2_paths(settings, b64, decode_options),
            **_tf_serving_paths(settings, b64, decode_options),
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: TF Serving reachable and a version of the model AVAILABLE",
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}
                            },
                        },
                        "503": {
                            "description": "Not ready; `reason` says why",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}
                            },
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: requests, errors by kind, latency per stage",
                    "responses": {
                        "200": {"description": "Prometheus text format", "content": {"text/plain": {}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
            },
            "/": {
                "get": {
                    "summary": "The web page: paste a URL or drop an image",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
            "/static/{name}": {
                "get": {
                    "summary": "The page's stylesheet and script",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "The file"}, "404": {"description": "No such file"}},
                }
            },
        },
        "components": {
            "schemas": {
                "UrlRequest": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": url},
                },
                "Base64Request": {
                    "type": "object",
                    "required": ["b64"],
                    "properties": {"b64": b64},
                },
                "ImageRequest": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/UrlRequest"},
                        {"$ref": "#/components/schemas/Base64Request"},
                    ]
                },
                "BatchRequest": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["urls"],
                            "properties": {
                                "urls": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "uri", "minLength": 1},
                                    "minItems": 1,
                                    "maxItems": settings.max_batch,
                                }
                            },
                        },
                        {
                            "type": "object",
                            "required": ["images"],
                            "properties": {
                                "images": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/ImageRequest"},
                                    "minItems": 1,
                                    "maxItems": settings.max_batch,
                                }
                            },
                        },
                    ]
                },
                "Model": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "version": {
                            "type": ["integer", "null"],
                            "description": (
                                "The version that answered; null when no image of a batch reached the model"
                            ),
                        },
                        "label": {
                            "type": "string",
                            "description": "The version label the request went by, when it went by one",
                        },
                        "signature": {
                            "type": ["string", "null"],
                            "description": "null when no image of a batch reached the model",
                        },
                        "trained": {
                            "type": "boolean",
                            "description": (
                                "From the model's description, when the gateway was given it: false for "
                                "the untrained demo model, whose scores mean nothing"
                            ),
                        },
                    },
                },
                "Preprocessing": {
                    "type": "object",
                    "description": "The decode options that shaped the answer, and the preprocessing",
                    "properties": {
                        "draft": {"type": "boolean"},
                        "exif_orientation": {"type": "boolean"},
                        "background": {
                            "type": ["string", "null"],
                            "description": "#rrggbb; null: alpha dropped, as Keras",
                        },
                        "family": {"type": "string"},
                        "size": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 2,
                            "maxItems": 2,
                            "description": "[height, width]",
                        },
                    },
                },
                "ImageResult": {
                    "type": "object",
                    "required": ["probabilities", "top"],
                    "properties": {
                        "probabilities": {**scores, "description": "Softmax probabilities by class"},
                        "top": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": len(labels),
                            "items": {
                                "type": "object",
                                "properties": {
                                    "label": {"type": "string"},
                                    "probability": {"type": "number"},
                                },
                            },
                        },
                        "logits": {**scores, "description": "Raw scores, with ?logits=true"},
                    },
                },
                "Timings": {
                    "type": "object",
                    "description": "Milliseconds per stage",
                    "properties": {
                        k: {"type": "number"} for k in (*STAGES, "total")
                    },
                },
                "Single": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ImageResult"},
                        {
                            "type": "object",
                            "properties": {
                                "model": {"$ref": "#/components/schemas/Model"},
                                "preprocessing": {"$ref": "#/components/schemas/Preprocessing"},
                                "timings_ms": {"$ref": "#/components/schemas/Timings"},
                            },
                        },
                    ]
                },
                "Batch": {
                    "type": "object",
                    "properties": {
                        "model": {"$ref": "#/components/schemas/Model"},
                        "preprocessing": {"$ref": "#/components/schemas/Preprocessing"},
                        "results": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_batch,
                            "items": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/ImageResult"},
                                    {"$ref": "#/components/schemas/Error"},
                                ]
                            },
                        },
                        "timings_ms": {"$ref": "#/components/schemas/Timings"},
                    },
                },
                "Readiness": {
                    "type": "object",
                    "properties": {
                        "ready": {"type": "boolean"},
                        "reason": {"type": "string"},
                        "model": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "integer"}},
                        "checked_in_ms": {"type": "number"},
                    },
                },
                "PlainError": {
                    "type": "object",
                    "description": "The error shape of TF Serving's REST API and KServe v1 and v2",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "enum": error_codes(),
                                },
                                "message": {"type": "string", "description": "What went wrong, in words"},
                            },
                        }
                    },
                },
            }
        },
    }


def _plain_errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": status_meaning(s),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlainError"}}},
        }
        for s in statuses
    }


def _tf_serving_paths(
    settings: ServingTarget, b64: dict[str, Any], decode_options: list[dict[str, Any]]
) -> dict[str, Any]:
    """TF Serving's REST API, KServe v1 (gateway/tf_serving_rest.py)."""
    image = {"type": "object", "required": ["b64"], "properties": {"b64": b64}}
    wrapped = {"type": "object", "required": ["image_bytes"], "properties": {"image_bytes": image}}
    images = {
        "type": "array",
        "items": {"oneOf": [image, wrapped]},
        "minItems": 1,
        "maxItems": settings.max_batch,
    }
    columns = {"type": "array", "items": image, "minItems": 1, "maxItems": settings.max_batch}
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["instances"], "properties": {"instances": images}},
                        {
                            "type": "object",
                            "required": ["inputs"],
                            "properties": {
                                "inputs": {
                                    "oneOf": [
                                        images,
                                        {
                                            "type": "object",
                                            "required": ["image_bytes"],
                                            "properties": {"image_bytes": columns},
                                        },
                                    ]
                                }
                            },
                        },
                    ]
                }
            }
        },
    }
    answer = {
        "200": {
            "description": (
                "instances: {predictions: [{scores, classes, logits}, …]}; inputs: {outputs: {scores: "
                "[[…]], classes: [[…]], logits: [[…]]}}. scores are probabilities, classes the class "
                "names, both in the model's output order"
            ),
            "headers": _ANSWER_HEADERS,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_plain_errors(*_CLASSIFY_ERRORS, 404),
    }

    served = {
        "name": {"type": "string", "enum": [settings.model_name]},
        "version": _VERSION_IN_PATH,
        "label": {"type": "string", "pattern": f"^{LABEL_PATTERN.pattern}$"},
    }

    def path(*names: str) -> list[dict[str, Any]]:
        return [
            {"name": n, "in": "path", "required": True, "schema": served.get(n, {"type": "string"})}
            for n in names
        ]

    summary = "TF Serving REST predict (KServe v1): base64 images in, per-class scores and labels out"
    paths: dict[str, Any] = {
        "/v1/models/{name}:predict": {
            "post": {
                "summary": summary,
                "parameters": path("name") + decode_options,
                "requestBody": body,
                "responses": answer,
            }
        },
        "/v1/models/{name}/versions/{version}:predict": {
            "post": {
                "summary": f"{summary}; from this version of the model (404 if it is not served)",
                "parameters": path("name", "version") + decode_options,
                "requestBody": body,
                "responses": answer,
            }
        },
        "/v1/models/{name}/labels/{label}:predict": {
            "post": {
                "summary": f"{summary}; from the version this label names (404 if none)",
                "parameters": path("name", "label") + decode_options,
                "requestBody": body,
                "responses": answer,
            }
        },
        "/v1/models/{name}": {
            "get": {
                "summary": "TF Serving REST model status: model_version_status",
                "parameters": path("name"),
                "responses": {"200": {"description": "Status"}, **_plain_errors(404)},
            }
        },
        "/v1/models/{name}/metadata": {
            "get": {
                "summary": (
                    "TF Serving REST model metadata: the predict routes' signature (image_bytes in; "
                    "scores, classes, logits out)"
                ),
                "parameters": path("name"),
                "responses": {"200": {"description": "Metadata"}, **_plain_errors(404)},
            }
        },
    }
    # The versioned and labelled forms of status and metadata: that version's alone.
    for pinned in ("version", "label"):
        for suffix in ("", "/metadata"):
            operations = copy.deepcopy(paths[f"/v1/models/{{name}}{suffix}"])
            for operation in operations.values():
                operation["parameters"] = path("name", pinned)
                operation["summary"] += f"; the version this {pinned} names (404 listing those served)"
                operation["responses"] = {**_plain_errors(400, 503, 504), **operation["responses"]}
            paths[f"/v1/models/{{name}}/{pinned}s/{{{pinned}}}{suffix}"] = operations
    return paths


def _v2_paths(
    settings: ServingTarget, b64: dict[str, Any], decode_options: list[dict[str, Any]]
) -> dict[str, Any]:
    """KServe's Open Inference Protocol (v2), REST (gateway/kserve_v2.py)."""
    model_name = {"type": "string", "enum": [settings.model_name]}
    name = [{"name": "name", "in": "path", "required": True, "schema": model_name}]
    health = {"200": {"description": "Yes"}, "400": {"description": "No"}}
    tensor_in = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"const": "image"},
            "datatype": {"const": "BYTES"},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": settings.max_batch},
                "minItems": 1,
                "maxItems": 2,
            },
            "data": {"type": "array", "items": b64, "minItems": 1, "maxItems": settings.max_batch},
            "parameters": {"type": "object"},
        },
    }
    one_input = {"type": "array", "items": tensor_in, "minItems": 1, "maxItems": 1}
    requested = {"type": "object", "properties": {"name": {"type": "string"}}}
    tensor_out = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": ["probabilities", "logits", "labels"]},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "KServe v2: the gateway is live", "responses": health}},
        "/v2/health/ready": {
            "get": {"summary": "KServe v2: TF Serving has the model AVAILABLE", "responses": health}
        },
        "/v2/models/{name}": {
            "get": {
                "summary": "KServe v2 model metadata: input image (BYTES); probabilities, logits, labels",
                "parameters": name,
                "responses": {"200": {"description": "Metadata"}, **_plain_errors(404)},
            }
        },
        "/v2/models/{name}/ready": {
            "get": {
                "summary": "KServe v2: the model is ready",
                "parameters": name,
                "responses": {**health, **_plain_errors(404)},
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "summary": (
                    "KServe v2 inference: one BYTES input `image` of encoded image files, base64 "
                    "strings in JSON or raw with the binary tensor data extension "
                    "(Inference-Header-Content-Length)"
                ),
                "parameters": name + decode_options,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["inputs"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "parameters": {"type": "object"},
                                    "inputs": one_input,
                                    "outputs": {"type": "array", "items": requested},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": (
                            "Outputs (JSON, or JSON then binary data when asked); `parameters` holds the "
                            "decode options that shaped them"
                        ),
                        "headers": _ANSWER_HEADERS,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "model_name": {"type": "string"},
                                        "model_version": {"type": "string"},
                                        "id": {"type": "string"},
                                        "outputs": {"type": "array", "items": tensor_out},
                                    },
                                }
                            }
                        },
                    },
                    **_plain_errors(*_CLASSIFY_ERRORS, 404),
                },
            }
        },
    }
    # The protocol's versioned forms: the same operations, for one version of the model.
    version = {"name": "version", "in": "path", "required": True, "schema": _VERSION_IN_PATH}
    for suffix in ("", "/ready", "/infer"):
        operations = copy.deepcopy(paths[f"/v2/models/{{name}}{suffix}"])
        for operation in operations.values():
            operation["parameters"] = [*name, version, *operation["parameters"][len(name) :]]
            operation["summary"] += "; this version of the model (404 if it is not served)"
            operation["responses"] = {**_plain_errors(400), **operation["responses"]}
        paths[f"/v2/models/{{name}}/versions/{{version}}{suffix}"] = operations
    return paths


def with_api_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` for a gateway with API keys: both ways to send a key as security schemes, asked
    of every operation but the open ones (`api_keys.is_open`), which may then answer 401 and 403."""
    secured = copy.deepcopy(schema)
    secured["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    # Either scheme will do.
    secured["security"] = [{"bearer": []}, {"apiKey": []}]
    secured["info"]["description"] += (
        " Every route but the page, /healthz, /readyz, /openapi.json and /v2/health/* needs an API key."
    )
    for path, operations in secured["paths"].items():
        plain = path.startswith(errors.PLAIN_ERROR_PREFIXES)
        refusals = _plain_errors(401, 403) if plain else _errors(401, 403)
        for operation in operations.values():
            if is_open(path):
                operation["security"] = []
            else:
                operation["responses"].update(refusals)
    return secured


def error_codes() -> list[str]:
    """Every code `errors.describe` can answer, in the order of its table."""
    return list(dict.fromkeys([kind.code for kind in errors.ERRORS] + [errors.INTERNAL.code]))
