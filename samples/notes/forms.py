from django import forms

from .models import Note


class NoteForm(forms.ModelForm):
    """The one validation of a note, for the form page and the JSON API alike."""

    class Meta:
        model = Note
        fields = ["title", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 12})}
