import contextlib

import redis
from django import forms
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import transaction
from django.db.models import Q

from environments import mirror as registry_mirror
from environments.models import Environment, drain_refusal, single_environment
from exchange import contract
from exchange.redis_client import supervisor_redis

from . import cache
from .models import Application, Domain, Placement, validate_domain

# The admin offers this many ordered environment choices; the API takes any number.
ADMIN_ENVIRONMENT_SLOTS = 4


class OrderedSelects(forms.MultiWidget):
    """N selects, first to last: the order the application starts in, without any JavaScript."""

    template_name = "apps/widgets/ordered_selects.html"

    def __init__(self, slots=ADMIN_ENVIRONMENT_SLOTS, attrs=None):
        super().__init__([forms.Select() for _ in range(slots)], attrs)

    def use_required_attribute(self, initial):
        return False  # only the first choice is needed; the field validates that

    def decompress(self, value):
        return list(value or [])

    def value_from_datadict(self, data, files, name):
        if name in data:  # the API sends the ordered list itself
            return data.getlist(name) if hasattr(data, "getlist") else data[name]
        values = super().value_from_datadict(data, files, name)
        return [v for v in values if v]


class OrderedEnvironmentsField(forms.Field):
    """A non-empty ordered list of names of known environments, each at most once."""

    widget = OrderedSelects
    default_error_messages = {
        "invalid_list": "Give a list of environment names.",
        "unknown": "Unknown environment: %(names)s. Known: %(known)s.",
        "unverified": "Environment %(name)s takes no placements: %(reason)s, so it is not a verified environment "
                      "(it is shown as rejected on the Environments page). Verified: %(known)s.",
        "duplicate": "Environment %(name)s is listed twice.",
    }

    known = ()
    # name -> why: environments that exist in name only (their registration does not verify); refused, saying why.
    unverified = {}

    def set_choices(self, names):
        self.known = list(names)
        for widget in self.widget.widgets:
            widget.choices = [("", "---------")] + [(n, n) for n in self.known]

    def to_python(self, value):
        if value in self.empty_values:
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise forms.ValidationError(self.error_messages["invalid_list"], code="invalid_list")
        return list(value)

    def validate(self, value):
        super().validate(value)
        if not value and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        seen = set()
        for name in value:
            if name in seen:
                raise forms.ValidationError(self.error_messages["duplicate"], code="duplicate", params={"name": name})
            seen.add(name)
        for name in value:
            if name in self.unverified:
                raise forms.ValidationError(self.error_messages["unverified"], code="unverified", params={
                    "name": name, "reason": self.unverified[name], "known": ", ".join(self.known) or "none yet"})
        unknown = [n for n in value if n not in self.known]
        if unknown:
            raise forms.ValidationError(
                self.error_messages["unknown"],
                code="unknown",
                params={"names": ", ".join(unknown), "known": ", ".join(self.known) or "none registered yet"},
            )


class ApplicationCreateForm(forms.ModelForm):
    """Creating an application: used by the admin's add page and by POST /api/apps/."""

    environments = OrderedEnvironmentsField(
        help_text="Where the application runs, in start order. One is usual; several for service splitting."
    )
    admin_password = forms.CharField(
        label="Initial admin password", strip=False, widget=forms.PasswordInput(render_value=False)
    )

    class Meta:
        model = Application
        fields = ["name", "display_name", "admin_username", "concurrency", "request_timeout"]
        help_texts = {"name": f"Used in URLs, Redis keys and database names: {contract.NAME_RULE}."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only environments whose registration verified take placements: a row whose entry in Redis was since
        # overwritten without the secret is shown as rejected, and offered to nobody.
        self.fields["environments"].set_choices(Environment.objects.filter(rejected="").values_list("name", flat=True))
        self.fields["admin_username"].required = True
        if single_environment():
            # A single instance hosts everything on its one environment: naming it is optional.
            self.fields["environments"].required = False
            self.fields["environments"].initial = [single_environment()]

    def clean_environments(self):
        names = self.cleaned_data["environments"] or ([single_environment()] if single_environment() else [])
        refusal = drain_refusal(names)
        if refusal:
            raise forms.ValidationError(refusal)
        return names

    def full_clean(self):
        self.fields["environments"].unverified = dict(
            Environment.objects.exclude(rejected="").values_list("name", "rejected"))
        note_unverified(self)
        super().full_clean()

    def clean_name(self):
        name = self.cleaned_data["name"]
        if not contract.NAME_RE.match(name):
            raise forms.ValidationError(f"{name!r} is not a valid name: use {contract.NAME_RULE}.")
        if name in contract.RESERVED_APP_NAMES:
            raise forms.ValidationError(
                f"{name!r} is reserved; pick another name (reserved: {', '.join(sorted(contract.RESERVED_APP_NAMES))})."
            )
        return name

    def clean_admin_username(self):
        # Each worker creates the hosted application's superuser with this name: refuse here what Django's auth
        # would refuse there (the model field already holds it to auth's 150 characters).
        username = self.cleaned_data["admin_username"]
        UnicodeUsernameValidator()(username)
        return username

    def clean_admin_password(self):
        password = self.cleaned_data["admin_password"]
        validate_password(password)
        return password

    def save(self, commit=True):
        application = super().save(commit=False)
        application.admin_password_hash = make_password(self.cleaned_data["admin_password"])
        if commit:
            self.save_with_placements(application)
        return application

    def save_with_placements(self, application):
        envs = {e.name: e for e in Environment.objects.filter(name__in=self.cleaned_data["environments"])}
        with transaction.atomic():
            application.save()
            Placement.objects.bulk_create(
                Placement(application=application, environment=envs[name], position=i)
                for i, name in enumerate(self.cleaned_data["environments"])
            )
            transaction.on_commit(lambda: publish_quietly(application.pk))
        return application

    def _save_m2m(self):
        pass  # placements are written by save_with_placements


def note_unverified(form):
    """Add to the FORM's environments field the names it was given that have no row but are in Redis, written
    without the secret: the refusal says so rather than "unknown"."""
    field = form.fields["environments"]
    if not form.is_bound or settings.APP_DISCOVERY_ADAPTER == "local":
        return
    named = field.widget.value_from_datadict(form.data, form.files, form.add_prefix("environments"))
    names = [n for n in (named if isinstance(named, (list, tuple)) else [])
             if isinstance(n, str) and n not in field.known and contract.NAME_RE.fullmatch(n)]
    with contextlib.suppress(redis.RedisError):
        field.unverified.update(registry_mirror.unverified(supervisor_redis(), names))


class ApplicationChangeForm(forms.ModelForm):
    """Changing an application: used by the admin's change page and by PATCH /api/apps/<name>/. Its environments are
    changed by apps.placements (commands are sent), not by save(): the caller passes ``new_environments()`` there."""

    environments = OrderedEnvironmentsField(
        help_text="Where the application runs, in start order. An environment added is provisioned and started "
        "there if the application is running; one left is stopped and removed there. A new order applies at the "
        "next start.",
        error_messages={"required": "Give at least one environment: to remove the application everywhere, delete "
                                    "it."},
    )
    drop_database = forms.BooleanField(
        label="Drop the databases of the environments left", required=False,
        help_text="Unticked, an environment left keeps the application's database.")
    custom_domains = forms.CharField(
        label="Custom domains", required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="One per line, e.g. crm.example.com. With APP_APPS_DOMAIN the application answers at each, "
        "besides <name>.<APP_APPS_DOMAIN>: point its DNS at the supervisor and list it in the workers' ALLOWED_HOSTS.")

    class Meta:
        model = Application
        fields = ["display_name", "concurrency", "request_timeout"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only verified environments take a new placement (one already placed on one shown rejected since stays).
        current = self.instance.environment_names() if self.instance.pk is not None else []
        field = self.fields["environments"]
        field.set_choices(Environment.objects.filter(Q(rejected="") | Q(name__in=current)).order_by("name")
                          .values_list("name", flat=True))
        field.unverified = dict(Environment.objects.exclude(rejected="").exclude(name__in=current)
                                .values_list("name", "rejected"))
        if self.instance.pk is not None:
            # In start order: the admin's model_to_dict would give the many-to-many's environments, by name.
            self.initial["environments"] = self.instance.environment_names()
            self.initial["custom_domains"] = "\n".join(self.instance.domain_names())
        if self.is_bound and self.add_prefix("custom_domains") not in self.data:
            self.fields["custom_domains"].disabled = True  # not given: unchanged
        name = self.add_prefix("environments")
        if self.is_bound and name not in self.data and self.fields["environments"].widget.value_omitted_from_data(
                self.data, self.files, name):
            # Not given at all (a client posting only the display name): unchanged, rather than required.
            self.fields["environments"].disabled = True

    def full_clean(self):
        if not self.fields["environments"].disabled:
            note_unverified(self)
        super().full_clean()

    def clean_custom_domains(self):
        """The custom domains, one per line, each valid (models.validate_domain) and nobody else's."""
        if self.fields["custom_domains"].disabled:
            return None
        names = list(dict.fromkeys(line.strip().lower().rstrip(".") for line in
                                   (self.cleaned_data["custom_domains"] or "").splitlines() if line.strip()))
        problems = []
        for name in names:
            try:
                validate_domain(name)
            except forms.ValidationError as exc:
                problems.extend(exc.messages)
        taken = dict(Domain.objects.filter(name__in=names).exclude(application=self.instance)
                     .values_list("name", "application__name"))
        problems.extend(f"{name} is already a domain of application {app}." for name, app in sorted(taken.items()))
        if problems:
            raise forms.ValidationError(problems)
        return names

    def save_domains(self):
        """Make the application's custom domains those of the form (when it had the field). A domain given to
        another application since the form was checked: refused by the unique constraint, nothing changed."""
        names = self.cleaned_data.get("custom_domains")
        if names is None:
            return
        self.instance.domains.exclude(name__in=names).delete()
        for name in names:
            Domain.objects.get_or_create(application=self.instance, name=name)

    def clean_environments(self):
        names = self.cleaned_data["environments"]
        current = set(self.instance.environment_names()) if self.instance.pk is not None else set()
        refusal = drain_refusal([name for name in names or [] if name not in current])  # no new placement there
        if refusal:
            raise forms.ValidationError(refusal)
        return names

    def new_environments(self):
        """The environments asked for, or None when they are the application's already (same order)."""
        names = self.cleaned_data.get("environments")
        return None if names is None or names == self.instance.environment_names() else names

    def _save_m2m(self):
        pass  # placements are changed by apps.placements


def publish_quietly(pk):
    """Put a new application in the configuration cache; if Redis is away, the next rebuild will."""

    if settings.APP_DISCOVERY_ADAPTER == "local":  # a single instance: nothing reads the cache
        return
    try:
        cache.publish(supervisor_redis(), Application.objects.with_placements().get(pk=pk))
    except redis.RedisError:
        pass
