"""Sending alerts: one Delivery per alert and channel, attempted by the controller's ``deliver_alerts`` step and
retried with backoff; every attempt is recorded (DeliveryAttempt) for the admin.

Webhooks get a POST of the alert's JSON (``Alert.payload``) with ``Content-Type: application/json``, a User-Agent
naming App Supervisor and ``X-Appsup-Signature: sha256=<hex>``, the HMAC-SHA256 of the body with APP_SHARED_SECRET,
so that a receiver that knows the secret can tell a real alert from a forged one. A 2xx answer is a success;
redirects are not followed. E-mail goes out with django.core.mail.send_mail (Django's EMAIL_* settings).

A delivery is claimed before it is sent (its next attempt moved forward by a conditional UPDATE), so that two
controllers never send it both; a controller that dies mid-send leaves it to be retried once the claim runs out.
"""

import hashlib
import hmac
import json
import logging
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from audit import actions
from audit import log as audit
from exchange.contract import VERSION

from .models import EMAIL, FAILED, PENDING, SENT, TEST, WEBHOOK, Alert, AlertChannel, Delivery, DeliveryAttempt

log = logging.getLogger("appsup.alerts")

SOURCE_SETTINGS = "APP_ALERT_WEBHOOKS"
# Seconds to wait for a webhook to connect, and between two reads of its answer.
TIMEOUT = 5.0
# Seconds before the next attempt after the 1st, 2nd and 3rd failure; the attempt after the last is the last.
RETRY_DELAYS = (10, 60, 300)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# A claimed delivery's next attempt moves this far ahead: a sender that dies mid-send leaves it to be retried then.
CLAIM_SECONDS = 60
# Deliveries one call of deliver_due attempts at most.
BATCH = 10
USER_AGENT = f"AppSupervisor/{VERSION} (alerts)"
SIGNATURE_HEADER = "X-Appsup-Signature"


def channels():
    """(source, channel or None, kind, target) of every channel alerts go to now."""
    found = [(SOURCE_SETTINGS, None, WEBHOOK, url) for url in settings.APP_ALERT_WEBHOOKS]
    found += [(c.name, c, c.kind, c.target) for c in AlertChannel.objects.filter(enabled=True)]
    return found


def enqueue(alert, now, to=None):
    """One pending delivery of ALERT (saved) per channel (TO: a list as ``channels`` returns it), due at NOW."""
    Delivery.objects.bulk_create(
        Delivery(alert=alert, source=source, channel=channel, kind=kind, target=target, next_attempt_at=now)
        for source, channel, kind, target in (channels() if to is None else to)
    )


def deliver_due(now=timezone.now, limit=BATCH):
    """Attempt up to LIMIT deliveries that are due (NOW: a clock returning an aware datetime). Returns how many
    it attempted."""
    due = (Delivery.objects.filter(state=PENDING, next_attempt_at__lte=now()).select_related("alert")
           .order_by("next_attempt_at", "pk")[:limit])
    attempted = 0
    for delivery in due:
        if claim(delivery, now()):
            attempt(delivery, now)
            attempted += 1
    return attempted


def claim(delivery, now):
    """Whether this caller got DELIVERY to send (no other controller did since it was read)."""
    return Delivery.objects.filter(
        pk=delivery.pk, state=PENDING, attempt_count=delivery.attempt_count, next_attempt_at__lte=now,
    ).update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS)) == 1


def attempt(delivery, now=timezone.now):
    """Send a claimed DELIVERY once and record the outcome: sent, retried later, or failed for good."""
    status_code, error = send(delivery)
    at = now()
    number = delivery.attempt_count + 1
    ok = not error
    if ok:
        state, next_at, result = SENT, None, f"HTTP {status_code}" if status_code else "sent"
    elif number >= MAX_ATTEMPTS:
        state, next_at, result = FAILED, None, f"{error} (attempt {number} of {MAX_ATTEMPTS}; given up)"
    else:
        delay = RETRY_DELAYS[number - 1]
        state, next_at, result = PENDING, at + timedelta(seconds=delay), f"{error} (attempt {number} of " \
                                                                        f"{MAX_ATTEMPTS}; next in {delay} s)"
    if not ok:
        log.warning("alert %s to %s: %s", delivery.alert.event, delivery.target, result)
    with transaction.atomic():
        DeliveryAttempt.objects.create(delivery=delivery, number=number, at=at, ok=ok, status_code=status_code,
                                       error=error)
        Delivery.objects.filter(pk=delivery.pk).update(state=state, attempt_count=number, next_attempt_at=next_at,
                                                       last_attempt_at=at, result=result)
    delivery.state, delivery.attempt_count, delivery.next_attempt_at = state, number, next_at
    delivery.last_attempt_at, delivery.result = at, result
    alert = delivery.alert
    # The channel by its source and host only: a webhook's URL often is its secret (Slack's, Teams').
    audit.record(None, actions.ALERT_SEND, f"alert:{alert.pk}",
                 {"event": alert.event, "environment": alert.environment, "app": alert.app,
                  "channel": delivery.source, "kind": delivery.kind, "attempt": number},
                 actions.OK if ok else actions.FAILED, status=status_code, detail="" if ok else result)
    return delivery


def send(delivery):
    """(HTTP status or None, error message or "") of one try."""
    try:
        if delivery.kind == EMAIL:
            send_email(delivery.alert, delivery.target)
            return None, ""
        status_code = post_webhook(delivery.alert, delivery.target)
    except requests.Timeout:
        return None, f"no answer within {TIMEOUT:g} s"
    except requests.ConnectionError as exc:
        return None, f"could not connect: {_root_cause(exc)}"
    except Exception as exc:  # a mail server's refusal, a bad address, a bug: recorded and retried, never fatal
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= status_code < 300:
        return status_code, ""
    return status_code, f"HTTP {status_code}"


def post_webhook(alert, url):
    body = json.dumps(alert.payload()).encode()
    response = requests.post(url, data=body, headers=webhook_headers(body), timeout=TIMEOUT, allow_redirects=False)
    response.close()
    return response.status_code


def webhook_headers(body):
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if settings.APP_SHARED_SECRET:
        headers[SIGNATURE_HEADER] = "sha256=" + signature(body)
    return headers


def signature(body):
    """What X-Appsup-Signature carries after "sha256=": the HMAC-SHA256 of BODY with APP_SHARED_SECRET, in hex."""
    return hmac.new(settings.APP_SHARED_SECRET.encode(), body, hashlib.sha256).hexdigest()


def send_email(alert, address):
    # A header cannot hold a line break, and an application's error message may have several.
    first_line = alert.message.splitlines()[0] if alert.message else alert.event
    subject = f"[App Supervisor] {alert.event}: {first_line}"[:200]
    details = "\n".join(f"{key}: {value}" for key, value in alert.payload().items() if value is not None)
    send_mail(subject, f"{alert.message}\n\n{details}\n", None, [address], fail_silently=False)


def send_test(channel, now=timezone.now):
    """A test alert to CHANNEL (enabled or not), sent at once and recorded like any other; retried like any other
    if it fails. Returns its delivery."""
    at = now()
    alert = Alert.objects.create(event=TEST, message=f"a test alert from App Supervisor to channel {channel.name}",
                                 at=at)
    delivery = Delivery.objects.create(alert=alert, source=channel.name, channel=channel, kind=channel.kind,
                                       target=channel.target, next_attempt_at=at + timedelta(seconds=CLAIM_SECONDS))
    return attempt(delivery, now)


def _root_cause(exc):
    """The innermost reason of a requests error ("Connection refused"), not urllib3's nested repr."""
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    return getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
