"""The API's OpenAPI 3.0 document, and the check of a request body against its schemas (one source for both)."""

from __future__ import annotations

from typing import Any

from newsletter.directory import MAX_PAGE_ROWS, MAX_QUERY_CHARS, Sort
from newsletter.language import LANGUAGE_MAX_CHARS
from newsletter.models import (
    EMAIL_MAX_CHARS,
    NAME_MAX_CHARS,
    SLUG_MAX_CHARS,
    TAG_MAX_CHARS,
    TOPIC_DESCRIPTION_MAX_CHARS,
    TOPIC_KEY_MAX_CHARS,
    SubscriberStatus,
)
from newsletter.topics import TOPIC_KEY_RE
from subscribers.fields import MAX_TAGS, BadInput

STATUSES = [str(status) for status in SubscriberStatus]
MAX_TOPICS = 100  # topics one request sets on a subscriber
MAX_TAGGED = 1000  # subscribers one request tags
MAX_ID = 2**63 - 1
_nullable_text = {"type": "string", "nullable": True}
_TAGS = {"type": "array", "maxItems": MAX_TAGS, "items": {"type": "string", "maxLength": TAG_MAX_CHARS}}
_TOPIC_KEY = {"type": "string", "maxLength": TOPIC_KEY_MAX_CHARS, "pattern": TOPIC_KEY_RE.pattern}
_TOPICS = {
    "type": "array",
    "maxItems": MAX_TOPICS,
    "items": _TOPIC_KEY,
    "description": "Topic keys (`GET /topics`); none means every topic, as a reader who never chose.",
}
_TAG_COUNT = {
    "type": "object",
    "required": ["tag", "subscribers"],
    "properties": {"tag": {"type": "string"}, "subscribers": {"type": "integer"}},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Subscriber": {
        "type": "object",
        "required": ["id", "email", "name", "status", "source", "language", "tags", "topics", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": "string"},
            "name": _nullable_text,
            "status": {"type": "string", "enum": STATUSES},
            "source": {"type": "string"},
            "language": _nullable_text,
            "tags": {"type": "array", "items": {"type": "string"}},
            "topics": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "confirmed_at": {"type": "string", "format": "date-time", "nullable": True},
            "unsubscribed_at": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "SubscriberRow": {
        "type": "object",
        "required": ["id", "email", "name", "status", "source", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": "string"},
            "name": _nullable_text,
            "status": {"type": "string", "enum": STATUSES},
            "source": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "SubscriberPage": {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/SubscriberRow"}},
            "next": {
                "type": "string",
                "nullable": True,
                "description": "The `after` of the next page; null on the last.",
            },
        },
    },
    "SubscriberCreate": {
        "type": "object",
        "required": ["email"],
        "additionalProperties": False,
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": EMAIL_MAX_CHARS},
            "name": {"type": "string", "nullable": True, "maxLength": NAME_MAX_CHARS},
            "status": {"type": "string", "enum": ["active", "pending"], "description": "Without double_opt_in."},
            "double_opt_in": {
                "type": "boolean",
                "description": "Mail a confirmation link, as the sign-up form does (and with its limits); "
                "the subscriber stays pending until they confirm.",
            },
            "language": {"type": "string", "nullable": True, "maxLength": LANGUAGE_MAX_CHARS},
            "tags": _TAGS,
        },
    },
    "SubscriberUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "nullable": True, "maxLength": NAME_MAX_CHARS},
            "language": {"type": "string", "nullable": True, "maxLength": LANGUAGE_MAX_CHARS},
            "tags": _TAGS,
            "topics": _TOPICS,
        },
    },
    "TagCount": _TAG_COUNT,
    "TagList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _TAG_COUNT}},
    },
    "TagCreate": {
        "type": "object",
        "required": ["tag", "subscribers"],
        "additionalProperties": False,
        "properties": {
            "tag": {"type": "string", "maxLength": TAG_MAX_CHARS},
            "subscribers": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_TAGGED,
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                "description": "The ids of the subscribers to tag (a tag exists while someone carries it).",
            },
        },
    },
    "Topic": {
        "type": "object",
        "required": ["key", "name", "description", "subscribers"],
        "properties": {
            "key": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "subscribers": {"type": "integer", "description": "Readers who chose it."},
        },
    },
    "TopicList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Topic"}}},
    },
    "TopicDefine": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": NAME_MAX_CHARS, "description": "As readers see it."},
            "description": {"type": "string", "maxLength": TOPIC_DESCRIPTION_MAX_CHARS},
        },
    },
    "Issue": {
        "type": "object",
        "required": ["slug", "subject", "status", "sent_at", "deliveries", "complained", "unsubscribed_after"],
        "properties": {
            "slug": {"type": "string"},
            "subject": {"type": "string"},
            "status": {"type": "string", "enum": ["draft", "sending", "sent"]},
            "sent_at": {"type": "string", "format": "date-time", "nullable": True},
            "deliveries": {
                "type": "object",
                "required": ["sent", "unfinished", "failed", "bounced"],
                "properties": {name: {"type": "integer"} for name in ("sent", "unfinished", "failed", "bounced")},
            },
            "complained": {"type": "integer"},
            "unsubscribed_after": {"type": "integer", "description": "Unsubscribes within 7 days of receiving it."},
        },
    },
    "IssueList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Issue"}}},
    },
}

_ERRORS = {
    "400": "The request is malformed (a NUL in the URL, a damaged page cursor).",
    "401": "No valid bearer token.",
    "403": "The token is a viewer's, and this is a change.",
    "404": "No such subscriber, issue, topic or tag.",
    "409": "The address is already on the list.",
    "413": "The body is too large.",
    "422": "A field is invalid.",
    "429": "Too many sign-ups from this client or for this address (double opt-in).",
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _responses(ok: str, schema: str | None, description: str, errors: tuple[str, ...]) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": description}}
    if schema:
        responses[ok]["content"] = _json(schema)
    for code in ("400", "401", *(code for code in errors if code != "400")):
        responses[code] = {"description": _ERRORS[code], "content": _json("Error")}
    return responses


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_KEY = {"name": "key", "in": "path", "required": True, "schema": _TOPIC_KEY}
_TAG = {"name": "tag", "in": "path", "required": True, "schema": {"type": "string", "maxLength": TAG_MAX_CHARS}}
_SLUG = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string", "maxLength": SLUG_MAX_CHARS}}
LIST_PARAMETERS = [
    _query(
        "q",
        {"type": "string", "maxLength": MAX_QUERY_CHARS},
        "Start of the address or name; `@example.org` for a domain.",
    ),
    _query("status", {"type": "string", "enum": STATUSES}, "Only subscribers in this state."),
    _query("tag", {"type": "string", "maxLength": TAG_MAX_CHARS}, "Only subscribers with this tag."),
    _query("from", {"type": "string", "format": "date"}, "Joined on or after this day (UTC)."),
    _query("until", {"type": "string", "format": "date"}, "Joined on or before this day (UTC)."),
    _query("sort", {"type": "string", "enum": [str(sort) for sort in Sort]}, "Order of the list."),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_ROWS}, "Rows per page (50)."),
    _query("after", {"type": "string", "maxLength": 2000}, "The `next` of the page before."),
]


def document(base_url: str) -> dict[str, Any]:
    """The OpenAPI document served at /api/v1/openapi.json."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "newsletter API", "version": "1"},
        "servers": [{"url": base_url.rstrip("/") + "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`newsletter users token EMAIL`"}
            },
        },
        "paths": {
            "/subscribers": {
                "get": {
                    "summary": "Search the list, one page at a time (keyset: `after`).",
                    "parameters": LIST_PARAMETERS,
                    "responses": _responses("200", "SubscriberPage", "A page of subscribers.", ("400", "422")),
                },
                "post": {
                    "summary": "Add a subscriber: active (an import), pending, or invited by double opt-in.",
                    "requestBody": {"required": True, "content": _json("SubscriberCreate")},
                    "responses": {
                        **_responses("201", "Subscriber", "Added.", ("403", "409", "413", "422", "429")),
                        "202": {
                            "description": "Invited: a confirmation mail is on its way.",
                            "content": _json("Subscriber"),
                        },
                    },
                },
            },
            "/subscribers/{id}": {
                "parameters": [_ID],
                "get": {
                    "summary": "One subscriber.",
                    "responses": _responses("200", "Subscriber", "The subscriber.", ("404",)),
                },
                "patch": {
                    "summary": "Change name, language, tags or topics.",
                    "requestBody": {"required": True, "content": _json("SubscriberUpdate")},
                    "responses": _responses("200", "Subscriber", "Changed.", ("403", "404", "413", "422")),
                },
                "delete": {
                    "summary": "Forget the subscriber (GDPR erasure); an anonymous row stays for the counts.",
                    "responses": _responses("204", None, "Erased.", ("403", "404")),
                },
            },
            "/subscribers/{id}/unsubscribe": {
                "parameters": [_ID],
                "post": {
                    "summary": "Unsubscribe (the record stays, so the address is never mailed again).",
                    "responses": _responses("200", "Subscriber", "Unsubscribed.", ("403", "404")),
                },
            },
            "/tags": {
                "get": {"summary": "Tags in use.", "responses": _responses("200", "TagList", "The tags.", ())},
                "post": {
                    "summary": "Put a tag on subscribers (a new tag comes to be with its first subscriber).",
                    "requestBody": {"required": True, "content": _json("TagCreate")},
                    "responses": _responses("201", "TagCount", "Tagged.", ("403", "404", "413", "422")),
                },
            },
            "/tags/{tag}": {
                "parameters": [_TAG],
                "delete": {
                    "summary": "Take the tag off every subscriber.",
                    "responses": _responses("204", None, "Removed.", ("403", "404", "422")),
                },
            },
            "/topics": {
                "get": {
                    "summary": "The topics readers choose, with how many chose each.",
                    "responses": _responses("200", "TopicList", "The topics.", ()),
                }
            },
            "/topics/{key}": {
                "parameters": [_KEY],
                "put": {
                    "summary": "Define the topic, or rename and describe it.",
                    "requestBody": {"required": True, "content": _json("TopicDefine")},
                    "responses": _responses("200", "Topic", "Defined.", ("403", "413", "422")),
                },
                "delete": {
                    "summary": "Delete the topic and every reader's choice of it.",
                    "responses": _responses("204", None, "Deleted.", ("403", "404", "422")),
                },
            },
            "/issues": {
                "get": {"summary": "The last issues.", "responses": _responses("200", "IssueList", "Issues.", ())}
            },
            "/issues/{slug}": {
                "parameters": [_SLUG],
                "get": {"summary": "One issue.", "responses": _responses("200", "Issue", "The issue.", ("404",))},
            },
        },
    }


def validate_body(schema_name: str, data: Any) -> None:
    """Raise BadInput unless `data` fits the named request schema (the subset of JSON Schema used above)."""
    _check(SCHEMAS[schema_name], data, "the body")


def check_value(schema: dict[str, Any], value: Any, where: str) -> None:
    """Raise BadInput (naming `where`) unless `value` fits `schema`."""
    _check(schema, value, where)


def _check(schema: dict[str, Any], given: Any, where: str) -> None:
    value: Any = given  # stays Any: the isinstance below is on a type chosen at run time
    if value is None:
        if schema.get("nullable"):
            return
        raise BadInput(f"{where} is missing or null")
    kind = schema.get("type")
    expected: type = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}[kind or "object"]
    if not isinstance(given, expected) or (kind == "integer" and isinstance(given, bool)):
        raise BadInput(f"{where} must be {'an' if kind in ('object', 'array', 'integer') else 'a'} {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise BadInput(f"{where} must be one of {', '.join(schema['enum'])}")
    if kind == "string" and len(value) > schema.get("maxLength", len(value)):
        raise BadInput(f"{where} has more than {schema['maxLength']} characters")
    if kind == "integer" and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        raise BadInput(f"{where} must be from {schema['minimum']} to {schema['maximum']}")
    if kind == "array":
        if len(value) > schema.get("maxItems", len(value)):
            raise BadInput(f"{where} has more than {schema['maxItems']} items")
        if len(value) < schema.get("minItems", 0):
            raise BadInput(f"{where} needs at least {schema['minItems']} item")
        for index, item in enumerate(value):
            _check(schema["items"], item, f"{where}[{index}]")
    if kind == "object":
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise BadInput(f"{where} needs the field {name!r}")
        for name, item in value.items():
            if name not in properties:
                if schema.get("additionalProperties") is False:
                    raise BadInput(f"{where} has an unknown field {str(name)[:40]!r}")
                continue
            _check(properties[name], item, f"{name!r}")
