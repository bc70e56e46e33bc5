"""Cleaning, checks and selection of synthetic samples."""

from streamsynth.quality.checks import (
    Check,
    DuplicateCheck,
    EchoCheck,
    EmptyCheck,
    LengthCheck,
    MalformedCheck,
    default_checks,
)
from streamsynth.quality.clean import Cleaned, clean_text, normalize_for_dedup
from streamsynth.quality.label_check import SeedLabelConsistencyCheck
from streamsynth.quality.ptrue import PTrueCheck
from streamsynth.quality.select import FacilityLocationSelector, KeepAll, LabelBalance, MMRSelector, Selector

__all__ = sorted(
    [
        "Check", "Cleaned", "DuplicateCheck", "EchoCheck", "EmptyCheck", "FacilityLocationSelector", "KeepAll", "LabelBalance", "MMRSelector", "LengthCheck",
        "MalformedCheck", "PTrueCheck", "SeedLabelConsistencyCheck", "Selector", "clean_text", "default_checks", "normalize_for_dedup",
    ]
)
