"""Diagnostics: functions of (model, guide, data) that return numbers; plots kept apart."""

from .aggregate import (
    AggregatePosterior,
    ConditionedAggregatePosterior,
    DiagonalNormalAggregatePosterior,
    MixtureAggregatePosterior,
    SampleAggregatePosterior,
    sample_prior,
)
from .bayes_loop import BayesLoopResult, PriorGap, bayes_loop, min_rows, prior_gap
from .evidence import Evidence, log_likelihood, pareto_khat
from .features import (
    FeatureRecovery,
    FeatureShapes,
    feature_recovery,
    feature_shapes,
    localization,
    orientation_selectivity,
)
from .gaps import InferenceGaps, inference_gaps
from .information import ACTIVE_UNIT_THRESHOLD, Estimate, Information, information
from .snr import GradientSNR, SNRCallback, gradient_snr, loglog_slope, snr_versus_particles
from .two_sample import TwoSampleResult, energy_test

__all__ = ["AggregatePosterior", "DiagonalNormalAggregatePosterior", "MixtureAggregatePosterior",
           "ConditionedAggregatePosterior", "SampleAggregatePosterior", "sample_prior",
           "information", "Information", "Estimate", "ACTIVE_UNIT_THRESHOLD", "log_likelihood",
           "Evidence", "pareto_khat",
           "gradient_snr", "GradientSNR", "SNRCallback", "snr_versus_particles", "loglog_slope",
           "energy_test", "TwoSampleResult", "inference_gaps", "InferenceGaps", "bayes_loop",
           "BayesLoopResult", "min_rows", "prior_gap",
           "PriorGap", "feature_recovery", "FeatureRecovery", "feature_shapes", "FeatureShapes",
           "localization", "orientation_selectivity"]
