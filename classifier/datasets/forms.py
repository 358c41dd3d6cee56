"""Forms for datasets: the archive upload.

Imports classifier.datasets.services (besides Django and libraries); never another domain's views or
api.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.utils.translation import gettext_lazy as _

from classifier.datasets.services import (
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    MAX_VAL_FRACTION,
    MIN_VAL_FRACTION,
    human_size,
)


class DatasetUploadForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("An existing name makes a new version of that dataset; its older versions stay as they are."),
    )
    archive = forms.FileField(
        label=_("Archive"),
        help_text=_("A ZIP or tar archive with one folder per breed (ImageFolder layout)."),
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,.tar,.tgz,.gz,.bz2,.xz,application/zip,application/x-tar"}),
    )
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 2}))
    val_fraction = forms.FloatField(
        label=_("Validation fraction"),
        initial=DEFAULT_VAL_FRACTION,
        min_value=MIN_VAL_FRACTION,
        max_value=MAX_VAL_FRACTION,
        help_text=_("Share of each breed's photos kept aside to measure accuracy."),
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    seed = forms.IntegerField(
        label=_("Split seed"),
        initial=DEFAULT_SEED,
        min_value=0,
        max_value=2**31 - 1,
        help_text=_("The same seed gives the same train/validation split."),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if any(ord(char) < 32 for char in name):
            raise forms.ValidationError(_("The name cannot contain control characters."))
        return name

    def clean_archive(self):
        archive = self.cleaned_data["archive"]
        limit = settings.BREEDLAB_MAX_ARCHIVE_BYTES
        if archive.size > limit:
            raise forms.ValidationError(
                _("The archive is %(size)s; archives may be at most %(limit)s.")
                % {"size": human_size(archive.size), "limit": human_size(limit)}
            )
        return archive


class ArchiveSizeLimit(FileUploadHandler):
    """Stops reading an upload as soon as it is bigger than BREEDLAB_MAX_ARCHIVE_BYTES, before it
    fills the disk. Put it first in ``request.upload_handlers`` before the body is read; afterwards
    ``exceeded`` says whether the upload was cut off."""

    FORM_OVERHEAD = 64 * 1024  # the other fields and multipart headers

    def __init__(self, request=None, *, limit: int | None = None) -> None:
        super().__init__(request)
        self.limit = settings.BREEDLAB_MAX_ARCHIVE_BYTES if limit is None else limit
        self.exceeded = False
        self.request_length: int | None = None
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request_length = content_length
        return None

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        if self.request_length is not None and self.request_length > self.limit + self.FORM_OVERHEAD:
            self.exceeded = True
            raise StopUpload(connection_reset=True)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    def message(self) -> str:
        return str(
            _("The archive is larger than %(limit)s, the most this server accepts.")
            % {"limit": human_size(self.limit)}
        )
