"""Diagnostics: functions of (model, guide, data) that return numbers; plots kept apart."""

from .snr import GradientSNR, SNRCallback, gradient_snr, loglog_slope, snr_versus_particles

__all__ = ["gradient_snr", "GradientSNR", "SNRCallback", "snr_versus_particles", "loglog_slope"]
