"""Evaluation protocols shared by every method: few-shot accuracy ± 95% (``predict(support_x,
support_y, query_x) -> logits``), regression MSE after k adaptation steps and the pretrained
fine-tuning baseline, accuracy by instance in label-offset episodes, log-likelihood against the
exact GP oracle, and the statistics behind all of them."""
from __future__ import annotations

from metalearn_ext.evaluate.by_instance import accuracy_by_instance, by_instance_table
from metalearn_ext.evaluate.few_shot import few_shot_accuracy, few_shot_table
from metalearn_ext.evaluate.label_offset import label_offset_accuracy
from metalearn_ext.evaluate.likelihood import log_likelihood_vs_oracle, predictive_log_likelihood
from metalearn_ext.evaluate.regression import FineTuned, fine_tune_predict, pretrain_baseline, regression_mse
from metalearn_ext.evaluate.stats import interval, paired_interval

__all__ = ["FineTuned", "accuracy_by_instance", "by_instance_table", "few_shot_accuracy", "few_shot_table",
           "fine_tune_predict", "interval", "label_offset_accuracy", "log_likelihood_vs_oracle", "paired_interval",
           "predictive_log_likelihood", "pretrain_baseline", "regression_mse"]
