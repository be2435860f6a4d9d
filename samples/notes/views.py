import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from .forms import NoteForm
from .models import Note

PAGE_SIZE = 25
# The most notes one API answer lists (the newest first); "count" says how many match in all.
API_LIMIT = 100


@login_required
@require_http_methods(["GET"])
def note_list(request):
    query = request.GET.get("q", "").strip()
    page = Paginator(Note.objects.search(query), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "notes/note_list.html", {"page": page, "query": query})


@login_required
@require_http_methods(["GET", "POST"])
def note_form(request, pk=None):
    """A new note (no PK) or an existing one: the form, and its POST."""
    note = get_object_or_404(Note, pk=pk) if pk is not None else None
    form = NoteForm(request.POST if request.method == "POST" else None, instance=note)
    if form.is_valid():
        note = form.save()
        messages.success(request, f"Saved “{note}”.")
        return redirect("notes:list")
    return render(request, "notes/note_form.html", {"form": form, "note": note})


@require_http_methods(["GET", "POST"])
def api_notes(request):
    """GET: the notes (``?q=`` searches). POST a JSON object {"title", "body"}: a new note, 201. The caller is
    the application's logged-in user (its session cookie; a POST also sends the CSRF token as X-CSRFToken)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in first: this API uses the application's own login session."}, status=401)
    if request.method == "GET":
        notes = Note.objects.search(request.GET.get("q", ""))
        return JsonResponse({"count": notes.count(), "notes": [note.as_json() for note in notes[:API_LIMIT]]})
    if request.content_type != "application/json":
        return JsonResponse({"error": "Send the note as application/json."}, status=415)
    try:
        data = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "The body is not valid JSON."}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"error": 'Send a JSON object, e.g. {"title": "Call Ann", "body": "About the offer"}.'},
                            status=400)
    not_text = {field: ["Must be a string."] for field in ("title", "body")
                if field in data and not isinstance(data[field], str)}
    if not_text:
        return JsonResponse({"errors": not_text}, status=400)
    form = NoteForm(data)
    if not form.is_valid():
        return JsonResponse({"errors": {field: list(errors) for field, errors in form.errors.items()}}, status=400)
    return JsonResponse(form.save().as_json(), status=201)
