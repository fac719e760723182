"""What self-training does to unlabeled target patches: pseudo-label coverage, agreement, images.

Logged only (no direction is declared): these numbers show whether the teacher
hands the student anything to learn, but a high agreement is no evidence of a
correct segmentation, so they may not choose a checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

from domadapt.training.mean_teacher import label_stats, pseudo_labels
from domadapt.training.monitors import EvalContext, Monitor, MonitorResult


class PseudoLabelMonitor(Monitor):
    """The teacher and the student on fixed target patches: target | teacher | student."""

    name = "pseudo_labels"
    directions: dict = {}

    def __init__(self, patches: np.ndarray, threshold: float, class_keep: float = 0.0,
                 teacher: str = "teacher", student: str = "net") -> None:
        self.patches = torch.from_numpy(np.ascontiguousarray(patches, np.float32))[:, None]
        self.threshold, self.class_keep = threshold, class_keep
        self.teacher, self.student = teacher, student

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        x = self.patches.to(ctx.device)
        teacher, student = ctx.modules[self.teacher].eval(), ctx.modules[self.student].eval()
        with torch.inference_mode():
            t_prob = torch.sigmoid(teacher(x).float())
            s_logits = student(x).float()
        stats = label_stats(pseudo_labels(t_prob, self.threshold, self.class_keep), s_logits)
        metrics = {f"target_{k}": v for k, v in stats.items()}
        images = {}
        if ctx.want_images:
            s_prob = torch.sigmoid(s_logits)
            rows = [torch.cat([x[i, 0].clamp(0, 1), t_prob[i, 0], s_prob[i, 0]], dim=1)
                    for i in range(min(4, len(x)))]
            images["target_teacher_student"] = torch.cat(rows, dim=0).cpu()[None].repeat(3, 1, 1)
        return MonitorResult(metrics, images)
