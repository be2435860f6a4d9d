"""The OpenAPI 3 document of the JSON API (docs/architecture.md, "JSON API"), served at ``GET /api/schema/``.

Written by hand, next to the views it describes (apps.api, environments.api, api.auth), and
held to them by tests: tests/test_api_schema.py validates it against the OpenAPI specification and fuzzes every
operation from it with schemathesis. Change a view's answers, change this document.

The document is served without authentication: it is the same for everyone, says nothing about this supervisor's
applications or environments, and API tools (code generators, Swagger UI) fetch it before they hold a token.
"""

from api.auth import (
    DEFAULT_PAGE_SIZE,
    MAX_JSON_DEPTH,
    MAX_PAGE_SIZE,
    WARNING_HEADER,
    api_view,
    json_response,
)
from apps.lifecycle import MAX_TIMEOUT
from apps.models import BACKUP_PERMISSION, OPERATE_PERMISSION
from audit import actions as audit_actions
from audit.api import VIEW_PERMISSION as AUDIT_PERMISSION
from exchange.contract import (
    DEGRADED,
    DESIRED_STATES,
    DRAINED,
    DRAINING,
    MAX_APP_CONCURRENCY,
    MAX_APP_TIMEOUT,
    NAME_RE,
    NAME_RULE,
    OFFLINE,
    ONLINE,
    RESERVED_APP_NAMES,
    RUNTIME_STATES,
    UNKNOWN,
)

OPENAPI_VERSION = "3.0.3"


def ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema):
    return {"application/json": {"schema": schema}}


def answer(description, schema=None, headers=None):
    response = {"description": description}
    if schema is not None:
        response["content"] = json_content(schema)
    if headers:
        response["headers"] = headers
    return response


def nullable(schema):
    return {**schema, "nullable": True}


# -- schemas -------------------------------------------------------------------------------------------------

CONCURRENCY = ("How many of its requests each worker web process runs at once (never more than the worker's "
               "APP_WEB_THREADS); null: the worker's APP_APP_CONCURRENCY.")
REQUEST_TIMEOUT = "Seconds before a request is answered 504 (0: never); null: the worker's APP_APP_TIMEOUT."

SCHEMAS = {
    "LogEntry": {
        "type": "object",
        "description": "One request of the application on a worker web process (its newest LOG_KEEP = 500 are kept, "
                       "and its newest 50 errors with their tracebacks).",
        "required": ["method", "path", "status", "ms", "environment", "at", "error"],
        "properties": {
            "method": {"type": "string"},
            "path": {"type": "string", "description": "The application's own path (without /apps/<name>), no "
                                                      "query string; at most 300 characters."},
            "status": {"type": "integer"},
            "ms": {"type": "number", "description": "Milliseconds until Django answered."},
            "environment": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "error": nullable({
                "type": "object", "required": ["type", "message"],
                "description": "The exception a view raised (answered 500); `traceback` only with `errors=true`.",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                               "traceback": {"type": "string"}}}),
        },
    },
    "AppLogs": {
        "type": "object",
        "required": ["app", "entries", "skipped"],
        "properties": {
            "app": {"type": "string"},
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/LogEntry"}},
            "skipped": {"type": "integer", "description": "Stored entries that do not verify (not written with "
                                                          "APP_SHARED_SECRET) or are malformed: not shown."},
        },
    },
    "Error": {
        "type": "object",
        "description": "Every refusal but a create's validation errors. Some carry more fields (see "
                       "LifecycleError).",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong, for a person to read."}},
    },
    "PermissionError": {
        "type": "object",
        "description": "A refusal for want of a permission (or of a CSRF token: then without `permission`).",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "permission": {"type": "string", "description": "The missing Django permission, e.g. "
                                                            "apps.add_application.", "example": "apps.operate_application"},
        },
    },
    "LifecycleError": {
        "type": "object",
        "description": "Why a start, stop, restart or delete failed, and where.",
        "required": ["error", "environment"],
        "properties": {
            "error": {"type": "string"},
            "environment": nullable({
                "type": "string",
                "description": "The environment it failed on; null when the failure is not an environment's "
                               "(a bad parameter, an unknown application, another operation in progress, Redis "
                               "unavailable).",
            }),
            "pending": ref("schemas", "Pending"),
        },
    },
    "MoveRequest": {
        "type": "object",
        "required": ["from", "to"],
        "additionalProperties": False,
        "properties": {
            "from": {"type": "string", "description": "The environment it leaves (one it is placed on)."},
            "to": {"type": "string", "description": "The environment it goes to: online, verified, not degraded, "
                                                    "not hosting it already."},
            "drop_database": {"type": "boolean", "default": False,
                              "description": "Drop its database on the environment it leaves (kept by default)."},
        },
    },
    "Move": {
        "type": "object",
        "required": ["app", "from", "to", "state", "step", "error", "size", "sha256", "seconds", "started_at",
                     "finished_at"],
        "properties": {
            "app": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "state": {"type": "string", "enum": ["active", "done", "failed"]},
            "step": {"type": "string", "enum": ["dump", "load", "start", "switch", "remove"],
                     "description": "The last step it reached."},
            "error": nullable({"type": "string", "description": "On a done move, what was not tidied after the "
                                                                "switch (a source that could not be removed)."}),
            "size": nullable({"type": "integer", "description": "Bytes of the dump carried."}),
            "sha256": nullable({"type": "string", "description": "SHA-256 of the dump, checked by the "
                                                                 "destination before it restored it."}),
            "seconds": nullable({"type": "number"}),
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": nullable({"type": "string", "format": "date-time"}),
        },
    },
    "MoveError": {
        "type": "object",
        "description": "Why a move was refused or failed, and where; a failed move leaves the application where "
                       "it was, running as before.",
        "required": ["error", "environment"],
        "properties": {
            "error": {"type": "string"},
            "environment": nullable({"type": "string"}),
            "step": nullable({"type": "string", "enum": ["dump", "load", "start"],
                              "description": "The step that failed; null or absent when the move never began."}),
        },
    },
    "Pending": {
        "type": "object",
        "description": "Present when an environment was offline: the desired state is kept, and the controller "
                       "completes the operation once the environment is back.",
        "required": ["desired_state", "done", "waiting_for", "message"],
        "properties": {
            "desired_state": {"type": "string", "enum": list(DESIRED_STATES)},
            "done": {"type": "array", "items": {"type": "string"}, "description": "Environments where it ran."},
            "waiting_for": {"type": "array", "items": {"type": "string"}},
            "message": {"type": "string"},
        },
    },
    "Waiting": {
        "type": "object",
        "description": "A start, stop or restart recorded while an environment is offline: it ran where it could, "
                       "and the controller carries it out on the environments it waits for once they are back, "
                       "once (a restart is counted on each placement it did not reach).",
        "required": ["message", "environment", "pending", "app"],
        "properties": {
            "message": {"type": "string", "description": "What waits, for which environment, and why."},
            "environment": {"type": "string", "description": "The (first) environment it waits for."},
            "pending": ref("schemas", "Pending"),
            "app": ref("schemas", "App"),
        },
    },
    "EnvironmentConflict": {
        "type": "object",
        "description": "Why an environment was not deleted.",
        "required": ["error", "environment", "applications"],
        "properties": {
            "error": {"type": "string", "description": "Why, and, when it hosts applications, what force=true "
                                                       "would do to them."},
            "environment": {"type": "string"},
            "applications": {"type": "array", "items": {"type": "string"},
                             "description": "The applications it hosts (empty when it is refused for being "
                                            "online)."},
        },
    },
    "ChangePending": {
        "type": "object",
        "description": "What a change of environments left to the controller: the application is started on "
                       "`added` environments and removed from `removed` ones once `waiting_for` are back online "
                       "(or, after a failure, at its next try).",
        "required": ["added", "removed", "waiting_for", "message"],
        "properties": {
            "added": {"type": "array", "items": {"type": "string"}},
            "removed": {"type": "array", "items": {"type": "string"}},
            "waiting_for": {"type": "array", "items": {"type": "string"}},
            "message": {"type": "string"},
        },
    },
    "AppChangePending": {
        "allOf": [ref("schemas", "App"), {
            "type": "object",
            "required": ["pending"],
            "properties": {"pending": ref("schemas", "ChangePending")},
        }],
    },
    "ChangeError": {
        "type": "object",
        "description": "Why a change of environments answered as failed. With `pending`, the change is recorded "
                       "(`app` shows it) and the controller tries again.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "environment": nullable({"type": "string"}),
            "pending": ref("schemas", "ChangePending"),
            "app": ref("schemas", "App"),
        },
    },
    "AppChange": {
        "type": "object",
        "description": "What to change; what is left out stays as it is. `name`, `admin_username` and "
                       "`admin_password` cannot change (400).",
        "example": {"environments": ["env_b", "env_a"]},
        "properties": {
            "environments": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "uniqueItems": True,
                "description": "Names of registered environments, each once, in start order. An environment "
                               "added is provisioned and started there when the application is desired running; "
                               "one left is stopped and removed there; a new order applies at the next start.",
            },
            "drop_database": {"type": "boolean", "default": False,
                              "description": "Drop the application's database on the environments left (kept "
                                             "by default)."},
            "display_name": {"type": "string", "maxLength": 200},
            "concurrency": nullable({"type": "integer", "minimum": 1, "maximum": MAX_APP_CONCURRENCY,
                                     "description": CONCURRENCY}),
            "request_timeout": nullable({"type": "integer", "minimum": 0, "maximum": MAX_APP_TIMEOUT,
                                         "description": REQUEST_TIMEOUT}),
        },
    },
    "FieldErrors": {
        "type": "object",
        "description": "A create refused: messages per field; `__all__` when the body as a whole is refused "
                       f"(not JSON, not an object, nested deeper than {MAX_JSON_DEPTH} levels).",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            }
        },
    },
    "Status": {
        "type": "object",
        "description": "An application's last reported state on one environment.",
        "required": ["state", "error", "at"],
        "properties": {
            "state": {
                "type": "string",
                "enum": [*RUNTIME_STATES, UNKNOWN],
                "description": f"`{UNKNOWN}` while the environment is offline (its last report is stale).",
            },
            "error": nullable({"type": "string"}),
            "at": nullable({"type": "string", "format": "date-time", "description": "When it was reported."}),
        },
    },
    "App": {
        "type": "object",
        "required": ["name", "display_name", "environments", "desired_state", "statuses"],
        "properties": {
            "name": {"type": "string", "example": "crm"},
            "display_name": {"type": "string", "description": "The name when none was given."},
            "environments": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Where it runs, in start order.",
            },
            "desired_state": {"type": "string", "enum": list(DESIRED_STATES)},
            "statuses": {
                "type": "object",
                "description": "One entry per environment, keyed by its name.",
                "additionalProperties": ref("schemas", "Status"),
            },
            "concurrency": nullable({"type": "integer", "minimum": 1, "maximum": MAX_APP_CONCURRENCY,
                                     "description": CONCURRENCY}),
            "request_timeout": nullable({"type": "integer", "minimum": 0, "maximum": MAX_APP_TIMEOUT,
                                         "description": REQUEST_TIMEOUT}),
            "domains": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Its custom domains (edited in the admin), sorted. With APP_APPS_DOMAIN the "
                               "application answers at each, besides <name>.<APP_APPS_DOMAIN>.",
            },
        },
    },
    "Restore": {
        "type": "object",
        "required": ["id", "backup", "safety_backup", "environments", "state", "step", "error", "started_at",
                     "finished_at"],
        "properties": {
            "id": {"type": "integer"},
            "backup": nullable({"type": "integer", "description": "The backup restored (null once deleted)."}),
            "safety_backup": nullable({"type": "integer", "description": "Taken of its data before the restore."}),
            "environments": {"type": "array", "items": {"type": "string"}},
            "state": {"type": "string", "enum": ["active", "done", "failed"]},
            "step": nullable({"type": "string", "enum": ["safety backup", "stop", "load", "start"],
                              "description": "The step it is at, or reached; each change is an `app` event on "
                                             "/ws/events/."}),
            "error": nullable({"type": "string"}),
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": nullable({"type": "string", "format": "date-time"}),
        },
    },
    "Backup": {
        "type": "object",
        "required": ["id", "app", "environment", "engine", "kind", "size", "sha256", "created_at", "download"],
        "properties": {
            "id": {"type": "integer"},
            "app": {"type": "string"},
            "environment": {"type": "string", "description": "Where it was taken."},
            "engine": {"type": "string", "enum": ["sqlite", "postgresql"],
                       "description": "A SQLite database file, or a pg_dump custom-format archive."},
            "kind": {"type": "string", "enum": ["manual", "scheduled", "safety"],
                     "description": "`safety`: taken by a restore before it replaced the data."},
            "size": {"type": "integer", "description": "Bytes stored."},
            "sha256": {"type": "string", "description": "SHA-256 of the stored bytes, checked before a restore."},
            "created_at": {"type": "string", "format": "date-time"},
            "download": {"type": "string", "description": "Where its bytes are (GET)."},
        },
    },
    "RestoreRequest": {
        "type": "object",
        "required": ["backup"],
        "additionalProperties": False,
        "properties": {
            "backup": {"type": "integer", "description": "One of the application's backups."},
            "environment": {"type": "string",
                            "description": "Restore there, and run there alone (its other placements dropped): "
                                           "how an application whose environment is gone comes back. Left out: "
                                           "on each of its environments, which must be online."},
        },
    },
    "BackupError": {
        "type": "object",
        "description": "Why a backup or restore was refused or failed, and where.",
        "required": ["error", "environment"],
        "properties": {
            "error": {"type": "string"},
            "environment": nullable({"type": "string"}),
            "step": nullable({"type": "string", "enum": ["safety backup", "dump", "store", "stop", "load", "start"],
                              "description": "The step that failed; null when nothing was done."}),
        },
    },
    "AppCreate": {
        "type": "object",
        "required": ["name", "environments", "admin_username", "admin_password"],
        "example": {
            "name": "wiki",
            "display_name": "Team wiki",
            "environments": ["env_a"],
            "admin_username": "admin",
            "admin_password": "a-long-and-unguessable-passphrase",
        },
        "properties": {
            "name": {
                "type": "string",
                "pattern": NAME_RE.pattern,
                "description": f"{NAME_RULE}; not {', '.join(sorted(RESERVED_APP_NAMES))}. Unique.",
            },
            "display_name": {"type": "string", "maxLength": 200,
                             "description": "Shown in the admin; the name when empty or left out."},
            "environments": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "uniqueItems": True,
                "description": "Names of registered environments, each once, in start order.",
            },
            "admin_username": {
                "type": "string",
                "minLength": 1,
                "maxLength": 150,
                "description": "The hosted application's initial superuser (letters, digits and @.+-_).",
            },
            "admin_password": {
                "type": "string",
                "minLength": 1,
                "format": "password",
                "description": "Checked by the password validators; only its hash is stored.",
            },
            "concurrency": nullable({"type": "integer", "minimum": 1, "maximum": MAX_APP_CONCURRENCY,
                                     "description": CONCURRENCY}),
            "request_timeout": nullable({"type": "integer", "minimum": 0, "maximum": MAX_APP_TIMEOUT,
                                         "description": REQUEST_TIMEOUT}),
            "clone_of": nullable({"type": "string",
                                  "description": "Start with the data of this application (a fresh backup of it "
                                                 f"is taken); needs {BACKUP_PERMISSION} too. Its admin account is "
                                                 "the one given here, its sessions none. null: empty."}),
            "from_backup": nullable({"type": "integer",
                                     "description": "Start with the data of this backup (any application's); "
                                                    f"needs {BACKUP_PERMISSION} too. null: empty."}),
        },
    },
    "AppList": {
        "type": "object",
        "required": ["apps", "next"],
        "properties": {
            "apps": {"type": "array", "items": ref("schemas", "App")},
            "next": nullable({"type": "string", "format": "uri", "description": "The next page, or null."}),
        },
    },
    "Environment": {
        "type": "object",
        "required": ["name", "url", "proxy_url", "version", "status", "problem", "last_heartbeat_at"],
        "properties": {
            "name": {"type": "string"},
            "url": {"type": "string", "description": "The worker's access URL."},
            "proxy_url": {"type": "string", "description": "Where the supervisor reaches it (url when unset)."},
            "version": nullable({"type": "string"}),
            "status": {"type": "string", "enum": [ONLINE, DEGRADED, OFFLINE, DRAINING, DRAINED],
                       "description": f"`{DRAINING}` or `{DRAINED}` while it is out of service (its liveness is then "
                                      "in `liveness`), else its liveness."},
            "problem": nullable({"type": "string", "description": "Why it is not online."}),
            "last_heartbeat_at": nullable({"type": "string", "format": "date-time"}),
            "drain": {"type": "string", "enum": [DRAINING, DRAINED],
                      "description": "Present while drained or draining."},
            "liveness": {"type": "string", "enum": [ONLINE, DEGRADED, OFFLINE],
                         "description": "Present while drained or draining."},
            "drain_left": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "Present while drained or draining: each application the drain could not "
                                          "move away, with why."},
        },
    },
    "DrainProgress": {
        "allOf": [ref("schemas", "Environment")],
        "type": "object",
        "required": ["applications"],
        "properties": {"applications": {"type": "array", "items": {"type": "string"},
                                        "description": "The applications still placed on it."}},
    },
    "AuditEntry": {
        "type": "object",
        "description": "One entry of the audit log: who did what to what, when, and how it ended. Secrets (passwords, "
                       "tokens, keys) are removed from `parameters`.",
        "required": ["id", "at", "actor_kind", "actor", "action", "target", "parameters", "outcome", "status",
                     "detail", "request_id", "address"],
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "actor_kind": {"type": "string", "enum": list(audit_actions.ACTOR_KINDS)},
            "actor": {"type": "string", "description": "The username; the token's name, hint and owner "
                                                       "(SUPERVISOR_API_TOKEN for the bootstrap token); the "
                                                       "controller's id; the OS user and the command."},
            "action": {"type": "string", "example": "application.start"},
            "target": {"type": "string", "example": "application:crm"},
            "parameters": {"type": "object", "description": "What was asked: the query, the body, the form."},
            "outcome": {"type": "string", "enum": list(audit_actions.OUTCOMES)},
            "status": nullable({"type": "integer", "description": "The HTTP status answered (API calls)."}),
            "detail": {"type": "string", "description": "The error or refusal, as answered; empty when none."},
            "request_id": {"type": "string", "description": "The request's X-Request-ID."},
            "address": nullable({"type": "string", "description": "The client's address."}),
        },
    },
    "AuditList": {
        "type": "object",
        "required": ["entries", "next"],
        "properties": {
            "entries": {"type": "array", "items": ref("schemas", "AuditEntry")},
            "next": nullable({"type": "string", "format": "uri", "description": "The next page, or null."}),
        },
    },
    "EnvironmentList": {
        "type": "object",
        "required": ["environments", "next"],
        "properties": {
            "environments": {"type": "array", "items": ref("schemas", "Environment")},
            "next": nullable({"type": "string", "format": "uri", "description": "The next page, or null."}),
        },
    },
}

# -- parameters, headers, responses --------------------------------------------------------------------------

PARAMETERS = {
    "limit": {
        "name": "limit",
        "in": "query",
        "description": "How many items at most.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    },
    "after": {
        "name": "after",
        "in": "query",
        "description": "The name of the last item of the previous page: items after it by name. `next` "
                       "carries it for you.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"},
    },
    "name": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The application's name.",
        "schema": {"type": "string", "minLength": 1},
        "example": "crm",
    },
    "environment": {
        "name": "environment",
        "in": "path",
        "required": True,
        "description": "The environment's name.",
        "schema": {"type": "string", "minLength": 1},
        "example": "env_a",
    },
    "timeout": {
        "name": "timeout",
        "in": "query",
        "description": "Seconds the whole operation may take (default APP_COMMAND_TIMEOUT, 120). An environment "
                       "that has not answered by then fails it with 504.",
        "schema": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": MAX_TIMEOUT},
    },
    "force": {
        "name": "force",
        "in": "query",
        "description": "For environments that will never answer (true/false, 1/0, yes/no; default false). On an "
                       "environment: remove it even though it hosts applications, with its placements (the "
                       "applications keep their other placements). On an application: remove it without sending "
                       "anything to its offline environments (what it left there is not reachable).",
        "schema": {"type": "boolean", "default": False},
    },
    "drop_database": {
        "name": "drop_database",
        "in": "query",
        "description": "Also drop the application's database on each environment (true/false, 1/0, yes/no). "
                       "Kept by default.",
        "schema": {"type": "boolean", "default": False},
    },
}

HEADERS = {
    "Warning": {
        "description": "Present when the answer comes from the database mirror and may be stale (Redis "
                       "unavailable, no controller running), saying why.",
        "schema": {"type": "string"},
    },
    "Location": {"description": "The new application's URL.", "schema": {"type": "string"}},
}

ERROR = ref("schemas", "Error")
LIFECYCLE_ERROR = ref("schemas", "LifecycleError")
WARNED = {WARNING_HEADER: ref("headers", "Warning")}

RESPONSES = {
    "Unauthorized": answer(
        "No credentials, or wrong ones (the message says which). Carries `WWW-Authenticate: Bearer`.",
        ERROR,
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "Forbidden": answer(
        "A staff session whose user lacks the permission the operation needs (its `x-permission`; `permission` "
        "names the missing one), or a session's unsafe request without a valid CSRF token. The bootstrap token "
        "holds every permission.",
        ref("schemas", "PermissionError"),
    ),
    "BadPage": answer("`limit` or `after` is not valid.", ERROR),
    "TooLarge": answer("The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default).", ERROR),
    "NotJson": answer(
        "The body is not `application/json` (a `charset` other than UTF-8 neither). A POST with no body may "
        "name no Content-Type.",
        ERROR,
    ),
    "LifecycleBadParameter": answer("`timeout`, `drop_database` or `force` is not valid; environment is null.",
                                    LIFECYCLE_ERROR),
    "UnknownApp": answer("No application has this name; environment is null.", LIFECYCLE_ERROR),
    "Conflict": answer(
        "The command failed on an environment, or (a delete without `force`) an environment is offline: nothing "
        "is sent to it; environment names it.",
        LIFECYCLE_ERROR,
    ),
    "Locked": answer("Another start, stop, restart or delete of this application is in progress; retry once it "
                     "ends.", LIFECYCLE_ERROR),
    "RedisDown": answer("Redis is unavailable: no command can be sent.", LIFECYCLE_ERROR),
    "TimedOut": answer("An environment did not answer within `timeout` (a command still queued is cancelled); "
                       "environment names it.", LIFECYCLE_ERROR),
}


def lifecycle_failures():
    return {
        "400": ref("responses", "LifecycleBadParameter"),
        "401": ref("responses", "Unauthorized"),
        "403": ref("responses", "Forbidden"),
        "404": ref("responses", "UnknownApp"),
        "409": ref("responses", "Conflict"),
        "413": ref("responses", "TooLarge"),
        "415": ref("responses", "NotJson"),
        "423": ref("responses", "Locked"),
        "503": ref("responses", "RedisDown"),
        "504": ref("responses", "TimedOut"),
    }


def lifecycle_command(command, does):
    return {
        "post": {
            "operationId": f"{command}App",
            "tags": ["applications"],
            "summary": f"{command.capitalize()} an application on each of its environments",
            "description": f"{does} Waits until every environment answered, or `timeout`. Takes no body.",
            "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
            "x-permission": [OPERATE_PERMISSION],
            "responses": {
                "200": answer("Done everywhere: the application as it is now.", ref("schemas", "App")),
                "202": answer("Recorded, and waiting for an offline environment (nothing is sent to it, nor, on "
                              "a start or restart, to those after it): the controller carries it out there once "
                              "it is back. `environment` names the one it waits for.", ref("schemas", "Waiting")),
                **lifecycle_failures(),
            },
        }
    }


# -- the document --------------------------------------------------------------------------------------------

DOCUMENT = {
    "openapi": OPENAPI_VERSION,
    "info": {
        "title": "App Supervisor API",
        "version": "1",
        "description": (
            "Manage the applications and environments of an App Supervisor. Authenticate with "
            "`Authorization: Bearer $SUPERVISOR_API_TOKEN` (the bootstrap token: it acts as a superuser) or a "
            "staff session of the admin (which then needs Django's CSRF token on unsafe methods). A session's "
            "user needs the Django model permissions the admin would ask for: each operation's `x-permission` "
            "(view, add, delete, and `apps.operate_application` for start, stop and restart); without one the "
            "answer is 403 naming it. Bodies are JSON (`application/json`, UTF-8).\n\n"
            f"Lists return at most `limit` items (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE}) ordered "
            "by name, with `next`: the URL of the following page, or null.\n\n"
            "Every answer is JSON, errors included: `{\"error\": message}` (plus `environment` on lifecycle "
            "calls), or `{\"errors\": {field: [messages]}}` for a create. A method an endpoint does not take "
            "answers 405 with `Allow`; an unknown path under /api/ a 404; an unexpected failure a 500."
        ),
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "applications"},
        {"name": "backups"},
        {"name": "environments"},
        {"name": "audit"},
        {"name": "schema"},
    ],
    "security": [{"bearerAuth": []}, {"staffSession": []}],
    "paths": {
        "/api/environments/": {
            "get": {
                "operationId": "listEnvironments",
                "tags": ["environments"],
                "summary": "The registered environments, ordered by name",
                "parameters": [ref("parameters", "limit"), ref("parameters", "after")],
                "x-permission": ["environments.view_environment"],
                "responses": {
                    "200": answer("A page of environments.", ref("schemas", "EnvironmentList"), WARNED),
                    "400": ref("responses", "BadPage"),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                },
            }
        },
        "/api/environments/{environment}/": {
            "delete": {
                "operationId": "deleteEnvironment",
                "tags": ["environments"],
                "summary": "Forget an environment that will never answer",
                "description": "Removes the environment, its registration in Redis and, with `force`, its "
                               "placements: each application keeps its other placements and keeps running there; "
                               "its data on this environment is not reachable. A worker that comes back after all "
                               "registers again as a new environment, hosting nothing.",
                "parameters": [ref("parameters", "environment"), ref("parameters", "force")],
                "x-permission": ["environments.delete_environment"],
                "responses": {
                    "204": answer("Forgotten."),
                    "400": answer("`force` is not valid.", ERROR),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No environment has this name.", ERROR),
                    "409": answer("It is online (its worker would register it again; stop it first), or it hosts "
                                  "applications and `force` is not true: the message says what forcing does and "
                                  "`applications` names them.", ref("schemas", "EnvironmentConflict")),
                    "503": answer("Redis is unavailable: nothing was deleted.", ERROR),
                },
            }
        },
        "/api/environments/{environment}/drain": {
            "post": {
                "operationId": "drainEnvironment",
                "tags": ["environments"],
                "summary": "Take an environment out of service and move its applications away",
                "description": (
                    "From now on it takes no new application (a create naming it is refused with 400). The "
                    "controller moves its applications, one at a time, each to the online environment with the "
                    "fewest applications that does not host it already (with its data, as `move` does); one no "
                    "environment can take is stopped there (when it runs nowhere else) and listed in `drain_left` "
                    "with the reason. `status` reads draining, then drained. Answers at once; takes no body."),
                "parameters": [ref("parameters", "environment")],
                "x-permission": ["environments.change_environment"],
                "responses": {
                    "202": answer("Draining (or drained already).", ref("schemas", "DrainProgress")),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No environment has this name.", ERROR),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                },
            }
        },
        "/api/environments/{environment}/undrain": {
            "post": {
                "operationId": "undrainEnvironment",
                "tags": ["environments"],
                "summary": "Return a drained or draining environment to service",
                "description": "It takes new applications again; applications already moved away stay where they "
                               "are. Takes no body.",
                "parameters": [ref("parameters", "environment")],
                "x-permission": ["environments.change_environment"],
                "responses": {
                    "200": answer("In service.", ref("schemas", "DrainProgress")),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No environment has this name.", ERROR),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                },
            }
        },
        "/api/apps/": {
            "get": {
                "operationId": "listApps",
                "tags": ["applications"],
                "summary": "The applications, ordered by name",
                "parameters": [ref("parameters", "limit"), ref("parameters", "after")],
                "x-permission": ["apps.view_application"],
                "responses": {
                    "200": answer("A page of applications.", ref("schemas", "AppList"), WARNED),
                    "400": ref("responses", "BadPage"),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                },
            },
            "post": {
                "operationId": "createApp",
                "tags": ["applications"],
                "summary": "Create an application (stopped)",
                "requestBody": {"required": True, "content": json_content(ref("schemas", "AppCreate"))},
                "x-permission": ["apps.add_application"],
                "responses": {
                    "201": answer("Created.", ref("schemas", "App"), {"Location": ref("headers", "Location"),
                                                                      **WARNED}),
                    "400": answer(
                        "Refused, with messages per field: invalid values, wrong JSON types (the strings must be "
                        "strings, `environments` a list of strings), or `__all__` for a body that is not a JSON "
                        "object.",
                        ref("schemas", "FieldErrors"),
                        WARNED,
                    ),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                },
            },
        },
        "/api/apps/{name}/": {
            "get": {
                "operationId": "getApp",
                "tags": ["applications"],
                "summary": "One application",
                "parameters": [ref("parameters", "name")],
                "x-permission": ["apps.view_application"],
                "responses": {
                    "200": answer("The application.", ref("schemas", "App"), WARNED),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No application has this name.", ERROR),
                },
            },
            "patch": {
                "operationId": "changeApp",
                "tags": ["applications"],
                "summary": "Change an application: its environments (added, removed, reordered), display name or "
                           "share",
                "description": "Under the application's lock; waits for the commands a change of environments "
                               "sends (a remove where it left, a start where it was added if it is desired "
                               "running), or `timeout`.",
                "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
                "x-permission": ["apps.change_application"],
                "requestBody": {"required": True, "content": json_content(ref("schemas", "AppChange"))},
                "responses": {
                    "200": answer("Done: the application as it is now.", ref("schemas", "App"), WARNED),
                    "202": answer("Recorded, and done where it could be: an environment is offline, and the "
                                  "controller completes the change once it is back (`pending`).",
                                  ref("schemas", "AppChangePending"), WARNED),
                    "400": answer("Refused, with messages per field (an unknown, repeated or missing environment, "
                                  "a field that cannot change or is unknown, a wrong JSON type; `__all__` for a "
                                  "body that is not a JSON object), or `timeout` is not valid.",
                                  {"oneOf": [ref("schemas", "FieldErrors"), LIFECYCLE_ERROR]}, WARNED),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                    "409": answer("A command failed on an environment (named); the change is recorded and the "
                                  "controller tries again.", ref("schemas", "ChangeError")),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                    "423": ref("responses", "Locked"),
                    "503": ref("responses", "RedisDown"),
                    "504": answer("An environment did not answer within `timeout` (named); the change is "
                                  "recorded and the controller tries again.", ref("schemas", "ChangeError")),
                },
            },
            "delete": {
                "operationId": "deleteApp",
                "tags": ["applications"],
                "summary": "Stop an application everywhere and remove it",
                "description": "Refused (409) while an environment that hosts it is offline, unless `force`: then "
                               "it is removed from the online ones, nothing is sent to the offline ones, and its "
                               "entries in Redis go (the proxy answers 404).",
                "parameters": [ref("parameters", "name"), ref("parameters", "timeout"),
                               ref("parameters", "drop_database"), ref("parameters", "force")],
                "x-permission": ["apps.delete_application"],
                "responses": {
                    "204": answer("Stopped everywhere and removed."),
                    **{code: response for code, response in lifecycle_failures().items()
                       if code not in ("413", "415")},
                },
            },
        },
        "/api/apps/{name}/start": lifecycle_command(
            "start", "Starts it on each environment in order, each once the one before runs; keeps it desired "
                     "running."),
        "/api/apps/{name}/stop": lifecycle_command(
            "stop", "Stops it on each environment; keeps it desired stopped."),
        "/api/apps/{name}/restart": lifecycle_command(
            "restart", "Stops, then starts it on each environment in order; keeps it desired running."),
        "/api/apps/{name}/move": {
            "post": {
                "operationId": "moveApp",
                "tags": ["applications"],
                "summary": "Move an application to another environment with its data",
                "description": (
                    "Dumps its database on `from` (engine-native; reads are still served there, writes answered "
                    "503 until the switch), carries it through Redis, checks its SHA-256 on `to`, restores it, "
                    "migrates and starts it there, then switches the proxy to `to` and removes it from `from` (its "
                    "database kept unless `drop_database`). Waits until done, or `timeout`."),
                "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
                "x-permission": [OPERATE_PERMISSION],
                "requestBody": {"required": True, "content": json_content(ref("schemas", "MoveRequest"))},
                "responses": {
                    "200": answer("Moved: the move, and the application as it is now.", {
                        "type": "object", "required": ["move", "app"],
                        "properties": {"move": ref("schemas", "Move"), "app": ref("schemas", "App")}}),
                    "400": answer("A body that is not valid (`errors` per field), or a move that cannot be: the same "
                                  "environment, not placed on `from`, already on `to`, `to` unknown, offline, "
                                  "degraded or not verified.", {"oneOf": [ref("schemas", "MoveError"),
                                                                          ref("schemas", "FieldErrors")]}),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                    "409": answer("`from` is offline, or a step failed there or on `to`: nothing changed, the "
                                  "application runs where it was.", ref("schemas", "MoveError")),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                    "423": ref("responses", "Locked"),
                    "503": ref("responses", "RedisDown"),
                    "504": answer("A step did not end within `timeout`: nothing changed.",
                                  ref("schemas", "MoveError")),
                },
            }
        },
        "/api/apps/{name}/signin-link": {
            "post": {
                "operationId": "appSigninLink",
                "tags": ["applications"],
                "summary": "A one-time link into the application's admin, signed in as the caller",
                "description": (
                    "The admin's \"Open as operator\": a link that signs the caller into the application's own "
                    "admin on `environment` as `operator-<username>` (a superuser there when the caller is one "
                    "here, otherwise staff with no permissions of the application's), once, within `expires_in` "
                    "seconds (APP_SIGNIN_MAX_AGE, at most 60). Refused (403) to the bootstrap token, which is no "
                    "person."),
                "parameters": [ref("parameters", "name")],
                "x-permission": [OPERATE_PERMISSION],
                "requestBody": {"required": False, "content": json_content({
                    "type": "object", "properties": {"environment": {
                        "type": "string", "description": "Optional when the application is on one environment."}},
                    "additionalProperties": False})},
                "responses": {
                    "200": answer("The link.", {
                        "type": "object", "required": ["url", "app", "environment", "user", "expires_in"],
                        "properties": {"url": {"type": "string"}, "app": {"type": "string"},
                                       "environment": {"type": "string"}, "user": {"type": "string"},
                                       "expires_in": {"type": "integer"}}}),
                    "400": answer("A body that is not valid, or an environment the application is not on.",
                                  ref("schemas", "FieldErrors")),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                },
            }
        },
        "/api/audit/": {
            "get": {
                "operationId": "listAuditEntries",
                "tags": ["audit"],
                "summary": "The audit log, newest first",
                "description": (
                    "Every API call that may change something (refused ones included), admin action, "
                    "command-line command that changes something and controller action, kept APP_AUDIT_DAYS "
                    "days. Filters combine. Paged by id: `after` is the id of the last entry of the previous "
                    "page (`next` carries it)."),
                "parameters": [
                    ref("parameters", "limit"),
                    {"name": "after", "in": "query", "description": "The id of the last entry of the previous page.",
                     "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        {"name": "actor", "in": "query", "description": 'Part of the actor (any case), e.g. a username.',
         "schema": {"type": "string"}},
        {"name": "actor_kind", "in": "query", "description": 'One actor kind.',
         "schema": {"type": "string", "enum": list(audit_actions.ACTOR_KINDS)}},
        {"name": "action", "in": "query", "description": 'An action (application.start), or a prefix ending in a dot (application.).',
         "schema": {"type": "string"}},
        {"name": "target", "in": "query", "description": 'A target, exactly (application:crm).',
         "schema": {"type": "string"}},
        {"name": "outcome", "in": "query", "description": 'One outcome.',
         "schema": {"type": "string", "enum": list(audit_actions.OUTCOMES)}},
        {"name": "request_id", "in": "query", "description": 'The X-Request-ID of the request that recorded it.',
         "schema": {"type": "string"}},
        {"name": "since", "in": "query", "description": 'Entries at or after this time (ISO 8601; a date alone is its midnight UTC).',
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "in": "query", "description": 'Entries before this time (ISO 8601; a date alone is its midnight UTC).',
         "schema": {"type": "string", "format": "date-time"}},
                ],
                "x-permission": [AUDIT_PERMISSION],
                "responses": {
                    "200": answer("A page of entries.", ref("schemas", "AuditList")),
                    "400": answer("A filter, `limit` or `after` is not valid; the message names it.", ERROR),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                },
            }
        },
        "/api/apps/{name}/logs": {
            "get": {
                "operationId": "getAppLogs",
                "tags": ["applications"],
                "summary": "An application's last requests and errors, newest first",
                "description": "As its environments' worker web processes recorded them (written within a second). "
                               "`errors=true` reads the error list, with tracebacks.",
                "parameters": [
                    ref("parameters", "name"),
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["1xx", "2xx", "3xx", "4xx", "5xx"]}},
                    {"name": "errors", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["true", "false"]}},
                    {"name": "path", "in": "query", "required": False, "description": "The path contains it.",
                     "schema": {"type": "string", "maxLength": 300}},
                    {"name": "environment", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,39}$"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
                ],
                "x-permission": ["apps.view_application"],
                "responses": {
                    "200": answer("The entries the filters keep.", ref("schemas", "AppLogs")),
                    "400": answer("A filter or `limit` is not valid (named).", ERROR),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                    "503": answer("Redis is unavailable: the logs live there.", ERROR),
                },
            }
        },
        "/api/apps/{name}/backups": {
            "get": {
                "operationId": "listBackups",
                "tags": ["backups"],
                "summary": "An application's backups, newest first",
                "parameters": [ref("parameters", "name")],
                "x-permission": ["apps.view_application"],
                "responses": {
                    "200": answer("Its backups, and its last 10 restores (one under way shows its step).", {
                        "type": "object", "required": ["backups", "restores"], "properties": {
                            "backups": {"type": "array", "items": ref("schemas", "Backup")},
                            "restores": {"type": "array", "items": ref("schemas", "Restore")}}}),
                    "400": answer("`timeout` is not valid.", ERROR),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                },
            },
            "post": {
                "operationId": "takeBackup",
                "tags": ["backups"],
                "summary": "Back up an application's database now",
                "description": (
                    "The agent of its first online environment dumps its database engine-native while it keeps "
                    "serving; the supervisor checks the bytes and stores them in the backup storage "
                    "(APP_BACKUP_STORAGE), off every environment. Answers once stored; its retention "
                    "(APP_BACKUP_KEEP) then deletes the oldest."),
                "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
                "x-permission": [BACKUP_PERMISSION],
                "responses": {
                    "201": answer("Stored.", ref("schemas", "Backup"), {"Location": ref("headers", "Location")}),
                    "400": answer("`timeout` is not valid.", ERROR),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": ref("responses", "UnknownApp"),
                    "409": answer("None of its environments is online, or the dump failed: no backup is listed.",
                                  ref("schemas", "BackupError")),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                    "423": ref("responses", "Locked"),
                    "503": ref("responses", "RedisDown"),
                    "504": answer("No answer within `timeout`: no backup is listed.", ref("schemas", "BackupError")),
                },
            },
        },
        "/api/apps/{name}/backups/{backup_id}": {
            "get": {
                "operationId": "downloadBackup",
                "tags": ["backups"],
                "summary": "A backup's bytes",
                "parameters": [ref("parameters", "name"), {
                    "name": "backup_id", "in": "path", "required": True, "schema": {"type": "integer"},
                    "description": "The backup's id."}],
                "x-permission": [BACKUP_PERMISSION],
                "responses": {
                    "200": {"description": "The dump (a SQLite file, or a pg_dump custom-format archive).",
                            "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                "format": "binary"}}}},
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No such application, or no such backup of it.", ERROR),
                    "409": answer("The backup storage cannot give its bytes.", ERROR),
                },
            },
        },
        "/api/apps/{name}/restore": {
            "post": {
                "operationId": "restoreBackup",
                "tags": ["backups"],
                "summary": "Replace an application's data by one of its backups",
                "description": (
                    "Checks the stored bytes (SHA-256, and a dump of the backup's engine) before anything, then "
                    "under the application's lock: a safety backup, stop, restore, migrate and start (stopped "
                    "again if it is desired stopped). Waits until done, or `timeout`."),
                "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
                "x-permission": [BACKUP_PERMISSION],
                "requestBody": {"required": True, "content": json_content(ref("schemas", "RestoreRequest"))},
                "responses": {
                    "200": answer("Restored: how, and the application as it is now.", {
                        "type": "object", "required": ["restore", "app"], "properties": {
                            "restore": {"allOf": [ref("schemas", "Restore"), {
                                "type": "object", "required": ["seconds"],
                                "properties": {"seconds": {"type": "number"}}}]},
                            "app": ref("schemas", "App")}}),
                    "400": answer("A body that is not valid (`errors` per field), a backup of another application, "
                                  "or an unknown environment.", {"oneOf": [ref("schemas", "BackupError"),
                                                                           ref("schemas", "FieldErrors")]}),
                    "401": ref("responses", "Unauthorized"),
                    "403": ref("responses", "Forbidden"),
                    "404": answer("No such application, or no such backup.", ERROR),
                    "409": answer("The backup's bytes are not the recorded ones, or not a dump of its engine, or an "
                                  "environment is offline (nothing was done); or a step failed (the error names the "
                                  "safety backup).", ref("schemas", "BackupError")),
                    "413": ref("responses", "TooLarge"),
                    "415": ref("responses", "NotJson"),
                    "423": ref("responses", "Locked"),
                    "503": ref("responses", "RedisDown"),
                    "504": answer("A step did not end within `timeout`.", ref("schemas", "BackupError")),
                },
            }
        },
        "/api/schema/": {
            "get": {
                "operationId": "getSchema",
                "tags": ["schema"],
                "summary": "This document",
                "security": [],
                "responses": {"200": answer("The OpenAPI document.", {"type": "object"})},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "SUPERVISOR_API_TOKEN (a superuser), or a per-user API token from the "
                                          "admin (appsup_…, its user's permissions)."},
            "staffSession": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                             "description": "A session of an active staff user, from the admin's login."},
        },
        "schemas": SCHEMAS,
        "parameters": PARAMETERS,
        "headers": HEADERS,
        "responses": RESPONSES,
    },
}


# -- fleet upgrades and commands across applications (fleet.api) ------------------------------------------------

_STEP_STATES = ["waiting", "backing_up", "migrating", "done", "failed"]
SCHEMAS.update({
    "PendingMigrations": {
        "type": "object",
        "description": "Per environment that reported it, the migrations of the code it hosts that the "
                       "application's database has not applied (`<app_label>.<migration>`, in the order they would "
                       "run); an empty list: up to date. An environment where it has no database yet is left out.",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    },
    "AppDetail": {
        "allOf": [ref("schemas", "App"), {
            "type": "object", "required": ["pending_migrations"],
            "properties": {"pending_migrations": ref("schemas", "PendingMigrations")}}],
    },
    "UpgradeRequest": {
        "type": "object",
        "properties": {"apps": {"type": "array", "minItems": 1, "items": {"type": "string"},
                                "description": "The applications to upgrade; left out: every one that needs it."}},
        "example": {"apps": ["crm"]},
    },
    "UpgradeStep": {
        "type": "object",
        "required": ["app", "environment", "state", "migrations", "applied", "backup", "error", "started_at",
                     "finished_at"],
        "properties": {
            "app": {"type": "string"},
            "environment": {"type": "string"},
            "state": {"type": "string", "enum": _STEP_STATES},
            "migrations": {"type": "array", "items": {"type": "string"},
                           "description": "Pending when the upgrade was asked for."},
            "applied": {"type": "array", "items": {"type": "string"}},
            "backup": nullable({"type": "string", "description": "The id of the safety backup taken on that environment before it was migrated "
                                               "(GET /api/apps/{name}/backups); null with APP_UPGRADE_BACKUP=false."}),
            "error": nullable({"type": "string", "description": "Why it failed; the application is then left "
                                                                 "stopped there."}),
            "started_at": nullable({"type": "string", "format": "date-time"}),
            "finished_at": nullable({"type": "string", "format": "date-time"}),
        },
    },
    "Upgrade": {
        "type": "object",
        "required": ["id", "state", "apps", "automatic", "asked_by", "created_at", "finished_at", "total", "done",
                     "failed", "steps"],
        "properties": {
            "id": {"type": "integer"},
            "state": {"type": "string", "enum": ["running", "done", "failed"]},
            "apps": nullable({"type": "array", "items": {"type": "string"},
                              "description": "As asked; null: every application that needed it."}),
            "automatic": {"type": "boolean", "description": "Started by APP_AUTO_UPGRADE."},
            "asked_by": nullable({"type": "string"}),
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": nullable({"type": "string", "format": "date-time"}),
            "total": {"type": "integer"},
            "done": {"type": "integer"},
            "failed": {"type": "integer"},
            "steps": {"type": "array", "items": ref("schemas", "UpgradeStep")},
        },
    },
    "CommandRequest": {
        "type": "object",
        "required": ["command"],
        "properties": {
            "command": {"type": "string", "description": "A management command's name, e.g. `clearsessions`."},
            "args": {"type": "array", "items": {"type": "string"},
                     "description": "Its arguments, handed to its parser as a list (never a shell)."},
        },
        "example": {"command": "check", "args": []},
    },
    "CommandResult": {
        "type": "object",
        "required": ["app", "environment", "exit_status", "output", "truncated", "error", "ok"],
        "properties": {
            "app": {"type": "string"},
            "environment": {"type": "string"},
            "exit_status": nullable({"type": "integer", "description": "null: it did not run there."}),
            "output": {"type": "string", "description": "stdout and stderr, at most 64 KiB."},
            "truncated": {"type": "integer", "description": "Characters of output not kept."},
            "error": nullable({"type": "string", "description": "Why it did not run (offline, no answer)."}),
            "ok": {"type": "boolean"},
        },
    },
    "CommandResults": {
        "type": "object",
        "required": ["app", "command", "args", "ok", "results"],
        "properties": {
            "app": {"type": "string"},
            "command": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "ok": {"type": "boolean", "description": "It ran and exited 0 on every environment."},
            "results": {"type": "array", "items": ref("schemas", "CommandResult")},
        },
    },
})
PARAMETERS["upgrade_id"] = {"name": "upgrade_id", "in": "path", "required": True, "description": "The upgrade's id.",
                            "schema": {"type": "string", "minLength": 1}, "example": "1"}
DOCUMENT["paths"]["/api/apps/{name}/"]["get"]["responses"]["200"] = answer(
    "The application, with its pending migrations per environment.", ref("schemas", "AppDetail"), WARNED)
DOCUMENT["paths"].update({
    "/api/apps/{name}/command": {
        "post": {
            "operationId": "runAppCommand",
            "tags": ["applications"],
            "summary": "Run a management command inside an application, on each of its environments",
            "description": "Sent to every environment at once; waits for their answers, or `timeout`. A failure "
                           "there (a non-zero exit, a refusal by the worker, an offline environment, no answer) is "
                           "that environment's result, not an HTTP error.",
            "parameters": [ref("parameters", "name"), ref("parameters", "timeout")],
            "x-permission": [OPERATE_PERMISSION],
            "requestBody": {"required": True, "content": json_content(ref("schemas", "CommandRequest"))},
            "responses": {
                "200": answer("Each environment's output and exit status.", ref("schemas", "CommandResults")),
                "400": answer("A body that is not valid, a command name refused (not a name, or one that cannot "
                              "run inside an application), `--database` among the arguments, or a bad `timeout`.",
                              {"oneOf": [ref("schemas", "FieldErrors"), LIFECYCLE_ERROR]}),
                **{code: response for code, response in lifecycle_failures().items() if code != "400"},
            },
        }
    },
    "/api/upgrade": {
        "post": {
            "operationId": "upgradeApps",
            "tags": ["applications"],
            "summary": "Migrate the applications that report pending migrations, in the background",
            "description": "Records an upgrade and answers at once; the controller migrates each application on "
                           "each environment (after a backup when a backup facility exists), environments side by "
                           "side, at most APP_UPGRADE_CONCURRENCY at a time on one. Progress: "
                           "`GET /api/upgrades/{id}` and `{\"type\": \"upgrade\"}` messages on `/ws/events/`.",
            "x-permission": [OPERATE_PERMISSION],
            "requestBody": {"required": True, "content": json_content(ref("schemas", "UpgradeRequest"))},
            "responses": {
                "202": answer("Recorded (done at once when nothing was pending).", ref("schemas", "Upgrade")),
                "400": answer("A body that is not valid, or unknown applications.", ref("schemas", "FieldErrors")),
                "401": ref("responses", "Unauthorized"),
                "403": ref("responses", "Forbidden"),
                "413": ref("responses", "TooLarge"),
                "415": ref("responses", "NotJson"),
            },
        }
    },
    "/api/upgrades/{upgrade_id}": {
        "get": {
            "operationId": "getUpgrade",
            "tags": ["applications"],
            "summary": "An upgrade and the progress of each of its steps",
            "parameters": [ref("parameters", "upgrade_id")],
            "x-permission": ["apps.view_application"],
            "responses": {
                "200": answer("The upgrade.", ref("schemas", "Upgrade")),
                "401": ref("responses", "Unauthorized"),
                "403": ref("responses", "Forbidden"),
                "404": answer("No upgrade has this id.", ERROR),
            },
        }
    },
})


@api_view("GET", "HEAD", public=True)
def schema_view(request):
    return json_response(DOCUMENT)
