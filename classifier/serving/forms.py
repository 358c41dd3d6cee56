"""Forms of the classify page: the photo upload and the "Wrong breed?" correction.

Imports classifier.models and classifier.web.names (display names of breeds) besides Django;
nothing of training/.
"""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from classifier.models import Feedback
from classifier.web.names import class_display_name, readable_label  # noqa: F401  (readable_label: re-exported)


class ClassifyForm(forms.Form):
    """A photo from the file picker (or drag and drop, or paste), or from the phone's camera."""

    image = forms.FileField(
        label=_("Dog photo"),
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
    )
    camera = forms.FileField(
        label=_("Take a photo"),
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "image/*", "capture": "environment"}),
    )

    def clean(self):
        data = super().clean()
        photo = data.get("image") or data.get("camera")
        if not photo:
            raise forms.ValidationError(_("Choose a photo to classify."), code="required")
        data["photo"] = photo
        return data


class FeedbackForm(forms.Form):
    correct_label = forms.ChoiceField(label=_("The right breed"), choices=())

    def __init__(self, *args, class_names: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = sorted(((name, class_display_name(name)) for name in class_names), key=lambda c: c[1].lower())
        self.fields["correct_label"].choices = [
            ("", _("Choose…")), *choices, (Feedback.OTHER_LABEL, _("Another breed, or not a dog")),
        ]
