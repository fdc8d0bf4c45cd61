"""The clinical generator term ("SpineGAN", Schonfeld & Veeravagu 2022): a frozen radiograph classifier scores
each generated image and its loss against the requested label is added to G's loss, in Gmain only.

The classifier sees generated images through its own preprocessing (`clinical.classifier.preprocess`), the
same path as the PNGs it was trained on; the study fed it [-1, 1] crops instead of [0, 1] resized images.
"""

import torch

import dnnlib
from clinical.classifier import label_kind, load_classifier, per_sample_loss, targets_from_labels

# ----------------------------------------------------------------------------
# The term: weight x BCE (binary), CE (multiclass) or per-class BCE (multilabel) of the frozen classifier's
# prediction on the un-augmented generated image vs the requested label. A `training.loss` extra_G_term.


class ClinicalLoss(torch.nn.Module):
    name = 'clinical'

    # fmt: off
    def __init__(
        self,
        classifier_pkl,          # classify.py train output; its class names must equal the dataset's.
        weight       = 0.1,      # lambda (0.1 in the study).
        class_names  = None,     # The training set's class names, in label order.
        is_onehot    = True,     # Whether the training set's labels are one-hot (else multi-hot).
    ):
        # fmt: on
        super().__init__()
        classifier, metadata = load_classifier(classifier_pkl, param='--clinical-loss')
        check_schema(classifier, class_names, is_onehot, classifier_pkl)
        self.classifier = classifier.eval().requires_grad_(False)
        self.weight = float(weight)
        self.record = dict(classifier=str(classifier_pkl), sha256=metadata['sha256'], weight=self.weight,
                           class_names=list(classifier.class_names), kind=classifier.kind,
                           dp=metadata.get('dp'))  # fmt: skip

    def train(self, mode=True):  # The classifier stays in eval mode (dropout off) whatever the caller asks.
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(
        self,
        gen_img: torch.Tensor,  # [N, C, H, W] in [-1, 1], straight from G (before augmentation).
        gen_c: torch.Tensor,  # [N, K] requested labels.
    ) -> torch.Tensor:  # [N] weighted per-sample loss.
        logits = self.classifier(gen_img.to(torch.float32))
        targets = targets_from_labels(gen_c, self.classifier.kind)
        return per_sample_loss(logits, targets, self.classifier.kind) * self.weight


# ----------------------------------------------------------------------------
# A classifier fits a dataset when it predicts the same classes in the same order with the matching head.


def check_schema(classifier, class_names, is_onehot: bool, where: str) -> None:
    """Raises dnnlib.UserError (naming --clinical-loss) when the classifier's labels are not the dataset's."""
    if class_names is None:
        raise dnnlib.UserError(f'{where}: the dataset has no class names to match', param='--clinical-loss')
    if list(classifier.class_names) != list(class_names):
        message = f'{where} predicts {", ".join(classifier.class_names)} but the dataset has {", ".join(class_names)}'
        raise dnnlib.UserError(message, param='--clinical-loss')
    expected = label_kind(list(class_names), is_onehot)
    if classifier.kind != expected:
        raise dnnlib.UserError(f'{where} is a {classifier.kind} classifier; the labels need {expected}',
                               param='--clinical-loss')  # fmt: skip


# ----------------------------------------------------------------------------
