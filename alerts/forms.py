from django import forms

from .models import EMAIL, WEBHOOK, AlertChannel


class AlertChannelForm(forms.ModelForm):
    url = forms.URLField(label="URL", max_length=500, required=False, assume_scheme="https",
                         help_text=AlertChannel._meta.get_field("url").help_text)

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "url", "email", "enabled")

    def clean(self):
        cleaned = super().clean()
        # A value refused already has its own error; an empty one is what is missing.
        needed = {WEBHOOK: ("url", "A webhook channel needs the http(s) URL to POST alerts to."),
                  EMAIL: ("email", "An e-mail channel needs the address to send alerts to.")}.get(cleaned.get("kind"))
        if needed and not cleaned.get(needed[0]) and needed[0] not in self.errors:
            self.add_error(*needed)
        return cleaned
