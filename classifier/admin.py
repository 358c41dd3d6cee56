from django.contrib import admin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from classifier.models import Dataset, EpochMetric, Feedback, ModelVersion, Prediction, TrainingRun
from classifier.runs.display import run_backbone_text

admin.site.site_header = _("Breedlab")
admin.site.site_title = _("Breedlab")
admin.site.index_title = _("Breedlab administration")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "status", "class_count", "image_count", "created_by", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "description")
    # A dataset's files, classes and split are never changed in place (changes make a new
    # version), so only its description can be edited here.
    readonly_fields = (
        "name", "version", "parent", "path", "status", "classes", "image_count", "report", "split", "error",
        "created_by", "created_at",
    )
    actions = ["start_training_run"]

    def add_view(self, request, form_url="", extra_context=None):
        """Datasets come in as archives (checked, extracted, reported): "Add" opens the upload page."""
        from django.shortcuts import redirect

        return redirect("classifier:dataset_create")

    @admin.display(description=_("classes"))
    def class_count(self, obj: Dataset) -> int:
        return obj.class_count

    @admin.action(description=_("Start a training run on the selected dataset"))
    def start_training_run(self, request, queryset):
        from django.contrib import messages
        from django.shortcuts import redirect
        from django.urls import reverse

        if queryset.count() != 1:
            self.message_user(request, _("Select exactly one dataset to train on."), messages.WARNING)
            return None
        return redirect(f"{reverse('classifier:run_new')}?dataset={queryset.get().pk}")


class EpochMetricInline(admin.TabularInline):
    model = EpochMetric
    extra = 0
    can_delete = False
    fields = ("phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
    readonly_fields = fields


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "dataset", "backbone", "optimizer", "best_val_acc", "progress", "created_by", "created_at")
    list_filter = ("status", "dataset", "created_at")
    search_fields = ("id", "error")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "started_at", "finished_at", "heartbeat_at", "attempts", "worker", "traceback")
    inlines = [EpochMetricInline]
    change_list_template = "admin/classifier/trainingrun/change_list.html"  # adds "New run" (/runs/new/)

    @admin.display(description=_("backbone"))
    def backbone(self, obj: TrainingRun) -> str:
        return run_backbone_text(obj)  # an auto run's choice once its results name it

    @admin.display(description=_("optimizer"))
    def optimizer(self, obj: TrainingRun) -> str:
        return obj.optimizer


@admin.register(EpochMetric)
class EpochMetricAdmin(admin.ModelAdmin):
    list_display = ("run", "phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
    list_filter = ("phase",)
    list_select_related = ("run",)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "backbone", "is_active", "val_acc", "created_at", "promoted_at", "promoted_by")
    list_filter = ("is_active", "backbone")
    search_fields = ("name",)
    readonly_fields = ("created_at", "promoted_at", "promoted_by", "is_active")

    @admin.display(description=_("validation accuracy"))
    def val_acc(self, obj: ModelVersion):
        return obj.val_acc


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "top_label", "top_score", "is_dog", "model_version", "elapsed_ms", "source")
    list_filter = ("is_dog", "source", "model_version", "created_at")
    search_fields = ("top_label", "original_name", "image_sha256")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at",)


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Staff review corrections here, the photo beside the claimed breed: only accepted ones are merged."""

    list_display = ("photo", "correct_label", "predicted", "review", "user", "merged_into", "created_at")
    list_filter = ("review", "merged_into", "created_at")
    search_fields = ("correct_label",)
    readonly_fields = ("prediction", "photo", "review", "reviewed_by", "reviewed_at", "merged_into", "created_at")
    actions = ["accept", "reject"]
    list_select_related = ("prediction", "user", "merged_into")

    @admin.display(description=_("photo"))
    def photo(self, obj: Feedback) -> str:
        from django.urls import reverse
        from django.utils.html import format_html

        if not obj.prediction_id:  # the admin's empty "add" form
            return "—"
        url = reverse("classifier:prediction_photo", args=[obj.prediction_id])
        return format_html('<a href="{}"><img src="{}" alt="" style="max-width:160px;max-height:160px"></a>', url, url)

    @admin.display(description=_("model's answer"))
    def predicted(self, obj: Feedback) -> str:
        return obj.prediction.top_label or "—"

    @admin.action(description=_("Accept the selected corrections (they will be merged into datasets)"))
    def accept(self, request, queryset):
        from classifier.serving.services import feedback_review

        count = feedback_review(feedback_ids=queryset.values_list("pk", flat=True), accept=True, reviewer=request.user)
        self.message_user(request, ngettext("%(n)s correction accepted.", "%(n)s corrections accepted.", count) % {"n": count})

    @admin.action(description=_("Reject the selected corrections"))
    def reject(self, request, queryset):
        from classifier.serving.services import feedback_review

        count = feedback_review(feedback_ids=queryset.values_list("pk", flat=True), accept=False, reviewer=request.user)
        self.message_user(request, ngettext("%(n)s correction rejected.", "%(n)s corrections rejected.", count) % {"n": count})
