"""The proxy's own answers (404, 502, 503, 504, the environment choice): an HTML page, or JSON for clients that
prefer it. Each says in words what happened and what to do, with links back to the supervisor's admin; the machine
code (``kind``) is in the JSON ``error`` and, on the page, in a footer and the ``data-code`` attribute."""

import asyncio
import json

from django.template.loader import render_to_string
from django.urls import reverse

from . import targets

TEMPLATE = "proxy/page.html"


def _quality(params):
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def prefers_json(accept):
    """Whether an Accept header ranks application/json above text/html (a plain */* or no header means HTML;
    at equal quality the type named outright wins over one matched by a wildcard)."""
    if not accept:
        return False
    ranges = {}
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        if media:
            ranges[media] = max(ranges.get(media, 0.0), _quality(params))

    def rank(specific, group):
        """(quality, specificity) of the best range matching: an exact type beats a wildcard at equal quality."""
        for media in specific:
            if media in ranges:
                return ranges[media], 2
        if group in ranges:
            return ranges[group], 1
        return ranges.get("*/*", 0.0), 0

    json_rank = rank(("application/json",), "application/*")
    html_rank = rank(("text/html", "application/xhtml+xml"), "text/*")
    return json_rank[0] > 0 and json_rank > html_rank


def _environments(refusal, incoming):
    listed = []
    for env in refusal.environments:
        link = targets.choice_link(incoming, env.name) if incoming is not None else ""
        listed.append({"env": env, "link": link})
    return listed


def admin_links(refusal):
    """[(label, path)]: where in the supervisor's admin an operator acts on REFUSAL, the application's first.
    Lists filtered by name rather than change pages: the proxy reads Redis, never the database, so it knows no
    primary keys."""
    if refusal.app and refusal.kind not in ("unknown-application", "bad-request"):
        links = [(f"{refusal.app} in the supervisor's admin",
                  reverse("admin:apps_application_changelist", query={"name": refusal.app}))]
    else:
        links = [("Applications in the supervisor's admin", reverse("admin:apps_application_changelist"))]
    if refusal.environment and refusal.kind != "unknown-environment":
        links.append((f"Environment {refusal.environment} in the supervisor's admin",
                      reverse("admin:environments_environment_changelist", query={"name": refusal.environment})))
    return links


def render_json(refusal, incoming):
    body = {
        "error": refusal.kind,
        "status": refusal.status,
        "title": refusal.title,
        "message": refusal.message,
        "advice": targets.advice_for(refusal) or None,
        "admin_url": admin_links(refusal)[0][1],
        "application": refusal.app or None,
        "environment": refusal.environment or None,
        "environments": [
            dict(item["env"].as_dict(), link=item["link"] or None) for item in _environments(refusal, incoming)
        ],
    }
    return json.dumps(body).encode()


def render_html(refusal, incoming):
    environments = []
    for item in _environments(refusal, incoming):
        env = item["env"]
        environments.append(
            {"name": env.name, "status": env.status, "reason": env.reason, "state": env.shown_state,
             "error": env.error, "usable": env.usable, "chosen": env.chosen, "link": item["link"]}
        )
    return render_to_string(
        TEMPLATE,
        {
            "status": refusal.status,
            "kind": refusal.kind,
            "title": refusal.title,
            "message": refusal.message,
            "advice": targets.advice_for(refusal),
            "links": admin_links(refusal),
            "app": refusal.app,
            "display_name": refusal.display_name,
            "environment": refusal.environment,
            "environments": environments,
        },
    ).encode()


async def respond(send, refusal, incoming, accept, head=False, extra_headers=()):
    """Send REFUSAL as a complete HTTP response."""
    if prefers_json(accept):
        body, content_type = render_json(refusal, incoming), b"application/json"
    else:
        # Template loading may read files: keep it off the event loop.
        body = await asyncio.to_thread(render_html, refusal, incoming)
        content_type = b"text/html; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"vary", b"Accept, Cookie"),
        *refusal.headers,
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
