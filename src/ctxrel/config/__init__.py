"""Configuration: every verb's settings as nested dataclasses, the one loader, the flags and the shipped presets.

Owns the dataclasses and `load_config` (`settings`), the command-line flags derived from their fields (`flags`)
and the preset files under ctxrel/configs/ with their `base:` chains (`shipped`). It may import core/ only. This
face re-exports the public names of `settings`, so `from ctxrel.config import RunConfig, load_config` keeps
working; it imports no torch.
"""

from ctxrel.config.settings import (MINIMUM, TRACKERS, VERB_CHECKS, VERBS, DataConfig, EvalConfig, LoraSettings,
                                    MixtureConfig, ModelConfig, PairsConfig, RunConfig, SeriesConfig, StageConfig,
                                    StudyConfig, StudyEvalConfig, TrainConfig, apply_override, config_class,
                                    from_dict, load, load_config, load_study_config, option, parse_value, set_key, to_dict)

__all__ = ["MINIMUM", "TRACKERS", "VERB_CHECKS", "VERBS", "DataConfig", "EvalConfig", "LoraSettings", "MixtureConfig",
           "ModelConfig", "PairsConfig", "RunConfig", "SeriesConfig", "StageConfig", "StudyConfig", "StudyEvalConfig",
           "TrainConfig", "apply_override", "config_class", "from_dict", "load", "load_config", "load_study_config", "option",
           "parse_value", "set_key", "to_dict"]
