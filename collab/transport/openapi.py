"""The HTTP API's OpenAPI description, served at ``/api/openapi.json``.

Written by hand next to the routes (``collab.transport.http``) rather than generated
from them: the routes read raw paths and bodies (percent-encoded names, binary Yjs
updates) that a schema generator cannot see. ``tests/integration/test_openapi.py`` runs
schemathesis against a live server with this description, so a route that drifts from it
fails there.
"""

from __future__ import annotations

from typing import Any

from collab import __version__
from collab.names import MAX_NAME_BYTES
from collab.storage.base import DOC_ORDERS
from collab.transport.sse import FLAG_VALUES as FLAGS

_ERROR = {"$ref": "#/components/schemas/Error"}
_BINARY = {"type": "string", "format": "binary"}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed input: a bad name, parameter or body. Nothing is changed.",
        401: "A token is needed (token auth is on).",
        403: "The token does not allow this.",
        404: "No such document (or route).",
        410: "The time asked for is older than the retention window keeps.",
        413: "The body is larger than --max-message-size.",
        429: "Too many awareness updates per second: the stream is closed.",
        503: "The store cannot be read or written now, or the update is not yet on disk.",
    }
    return {
        str(status): {
            "description": reasons[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for status in statuses
    }


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The document name as one percent-encoded path segment, slashes"
    " included (notes%2F2026%2Fplan), decoded and checked as a websocket's is.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES},
}
_TOKEN = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "An access token, where an Authorization: Bearer header cannot be sent.",
    "schema": {"type": "string"},
}
_AT = {
    "name": "at",
    "in": "query",
    "required": False,
    "description": "Read the document as it was then: ISO 8601 (local time unless a zone"
    " is given), @UNIX_SECONDS, now, or a duration back from now (90m, 2h, 3d).",
    "schema": {"type": "string"},
}
_STATE_VECTOR_JSON = {
    "type": "object",
    "description": "Yjs client id -> the number of its items the document holds.",
    "additionalProperties": {"type": "integer", "minimum": 0},
}
_ETAG = {
    "ETag": {"description": "Changes whenever the document does.", "schema": {"type": "string"}}
}
_AUTH: list[dict[str, list[str]]] = [{}, {"bearer": []}]


def _part(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "nullable": True,
        "type": "object",
        "required": ["at", "bytes", "updates"],
        "properties": {
            "at": {"type": "number", "description": "Time of the newest update it covers."},
            "bytes": {"type": "integer", "minimum": 0},
            "updates": {"type": "integer", "minimum": 0},
        },
    }


def description() -> dict[str, Any]:
    """The OpenAPI 3.0 document for every ``/api/`` route and the health checks."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "collab HTTP API",
            "version": __version__,
            "description": "Documents of a collab server: read them, post Yjs updates to"
            ' them, delete them, read their history. Every error is JSON: {"error": ...}.'
            " With token auth on, reads need read access and writes write access, by the"
            " same rule as websockets.",
        },
        "security": _AUTH,
        "paths": {
            "/api/docs": {
                "get": {
                    "operationId": "listDocs",
                    "summary": "A page of documents with their sizes",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "description": "The next of the previous page (same order).",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "order",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(DOC_ORDERS)},
                        },
                        _TOKEN,
                    ],
                    "responses": {
                        "200": {
                            "description": "The page; next is null on the last one.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/DocList"}
                                }
                            },
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/api/docs/{name}": {
                "parameters": [_NAME],
                "get": {
                    "operationId": "getDoc",
                    "summary": "The document now (or at a past time)",
                    "description": "JSON of its root types, or with Accept:"
                    " application/octet-stream the whole document as one Yjs update.",
                    "parameters": [
                        {
                            "name": "root",
                            "in": "query",
                            "description": "Roots to return, as NAME or NAME:TYPE (text,"
                            " map, array, xml); all, with types detected, when not given.",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                        _AT,
                        _TOKEN,
                    ],
                    "responses": {
                        "200": {
                            "description": "The document.",
                            "headers": _ETAG,
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "description": "root name -> its content",
                                    }
                                },
                                "application/octet-stream": {"schema": _BINARY},
                            },
                        },
                        "304": {"description": "If-None-Match held the current ETag."},
                        **_errors(400, 401, 403, 404, 410, 503),
                    },
                },
                "delete": {
                    "operationId": "deleteDoc",
                    "summary": "Delete the document and its history (collab docs delete)",
                    "description": "Its connections close with 4409; clients still holding"
                    " its history are refused with 4409 when they reconnect.",
                    "parameters": [_TOKEN],
                    "responses": {
                        "200": {
                            "description": "Deleted; the name lives on under a new epoch.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["name", "epoch"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "epoch": {"type": "integer", "minimum": 1},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/docs/{name}/state-vector": {
                "parameters": [_NAME],
                "get": {
                    "operationId": "getStateVector",
                    "summary": "The document's state vector",
                    "description": "Yjs v1 encoding, or JSON with Accept: application/json.",
                    "parameters": [_AT, _TOKEN],
                    "responses": {
                        "200": {
                            "description": "The state vector.",
                            "headers": _ETAG,
                            "content": {
                                "application/octet-stream": {"schema": _BINARY},
                                "application/json": {"schema": _STATE_VECTOR_JSON},
                            },
                        },
                        "304": {"description": "If-None-Match held the current ETag."},
                        **_errors(400, 401, 403, 404, 410, 503),
                    },
                },
            },
            "/api/docs/{name}/updates": {
                "parameters": [_NAME],
                "post": {
                    "operationId": "postUpdate",
                    "summary": "Apply a Yjs update, answered once it is on disk",
                    "description": "Validated exactly as a websocket update is and relayed"
                    " to the document's connections at once. The answer is the new state"
                    " vector (JSON with Accept: application/json).",
                    "parameters": [_TOKEN],
                    "requestBody": {
                        "required": True,
                        "content": {"application/octet-stream": {"schema": _BINARY}},
                    },
                    "responses": {
                        "200": {
                            "description": "Applied and on disk.",
                            "content": {
                                "application/octet-stream": {"schema": _BINARY},
                                "application/json": {"schema": _STATE_VECTOR_JSON},
                            },
                        },
                        **_errors(400, 401, 403, 413, 503),
                    },
                },
            },
            "/api/docs/{name}/events": {
                "parameters": [_NAME],
                "get": {
                    "operationId": "getEvents",
                    "summary": "The change feed (server-sent events)",
                    "description": "One update event per stored update (id: EPOCH-SEQ,"
                    " data: the update in base64), a snapshot first or when a resumed"
                    " position is gone, then synced, awareness (with ?awareness=1),"
                    " keep-alive comments and a final close event with a websocket close"
                    " code. Resume with the Last-Event-ID header or ?last_event_id=.",
                    "parameters": [
                        {
                            "name": "awareness",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(FLAGS)},
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "description": "The id of the last event seen (EPOCH-SEQ).",
                            "schema": {"type": "string"},
                        },
                        _TOKEN,
                    ],
                    "responses": {
                        "200": {
                            "description": "The stream.",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"$ref": "#/components/schemas/Event"}
                                }
                            },
                        },
                        **_errors(400, 401, 403, 503),
                    },
                },
            },
            "/api/docs/{name}/awareness": {
                "parameters": [_NAME],
                "post": {
                    "operationId": "postAwareness",
                    "summary": "Presence for an event stream (the fallback transport)",
                    "description": "A y-protocols awareness update on behalf of the event"
                    " stream that announced the session id in its first event; its states"
                    " leave when that stream ends.",
                    "parameters": [
                        {
                            "name": "session",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _TOKEN,
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/octet-stream": {"schema": _BINARY}},
                    },
                    "responses": {
                        "204": {"description": "Applied and relayed."},
                        **_errors(400, 401, 403, 404, 413, 429),
                    },
                },
            },
            "/api/docs/{name}/history": {
                "parameters": [_NAME],
                "get": {
                    "operationId": "getHistory",
                    "summary": "The times the document can be read at (collab docs history)",
                    "parameters": [
                        {
                            "name": "gap",
                            "in": "query",
                            "description": "Seconds without updates that separate two"
                            " editing sessions (default 300).",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10**8},
                        },
                        _TOKEN,
                    ],
                    "responses": {
                        "200": {
                            "description": "Its history.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/History"}
                                }
                            },
                        },
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process answers",
                    "security": [{}],
                    "responses": {"200": _plain("Alive.")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "The store is open and the server is not stopping",
                    "security": [{}],
                    "responses": {"200": _plain("Ready."), "503": _plain("Not ready.")},
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Event": {
                    "type": "object",
                    "description": "One server-sent event.",
                    "properties": {
                        "event": {
                            "type": "string",
                            "enum": [
                                "session",
                                "snapshot",
                                "update",
                                "synced",
                                "awareness",
                                "close",
                            ],
                        },
                        "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                        "data": {"type": "string"},
                        "retry": {"type": "integer", "minimum": 0},
                    },
                },
                "DocInfo": {
                    "type": "object",
                    "required": [
                        "name",
                        "updated_at",
                        "created_at",
                        "epoch",
                        "bytes",
                        "updates",
                        "rows",
                        "history_bytes",
                        "deleted_at",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "updated_at": {"type": "number", "description": "Last change."},
                        "created_at": {"type": "number"},
                        "epoch": {"type": "integer", "minimum": 0},
                        "bytes": {"type": "integer", "minimum": 0},
                        "updates": {"type": "integer", "minimum": 0},
                        "rows": {"type": "integer", "minimum": 0},
                        "history_bytes": {"type": "integer", "minimum": 0},
                        "deleted_at": {"type": "number", "nullable": True},
                    },
                },
                "DocList": {
                    "type": "object",
                    "required": ["docs", "next"],
                    "properties": {
                        "docs": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/DocInfo"},
                        },
                        "next": {"type": "string", "nullable": True},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["name", "readable_from", "checkpoint", "sessions", "compacted"],
                    "properties": {
                        "name": {"type": "string"},
                        "readable_from": {"type": "number", "nullable": True},
                        "checkpoint": _part("Updates older than the retention window, squashed."),
                        "sessions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["from", "to", "updates", "bytes"],
                                "properties": {
                                    "from": {"type": "number"},
                                    "to": {"type": "number"},
                                    "updates": {"type": "integer", "minimum": 1},
                                    "bytes": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                        "compacted": _part("The compacted row a load reads first."),
                    },
                },
            },
        },
    }


def _plain(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"text/plain": {"schema": {"type": "string"}}}}
