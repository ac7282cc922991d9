"""One exception type per family of bad input; every message names the file, key,
topic or parameter at fault and what was expected."""


class OatRosError(Exception):
    """Base class of every error oat_ros raises on purpose."""


class CheckpointError(OatRosError):
    """A checkpoint file is missing, corrupt, foreign, unsafe or does not fit the model."""


class ConfigError(OatRosError):
    """A configuration value (YAML key, checkpoint cfg entry, ROS parameter) is invalid."""


class InputError(OatRosError):
    """An observation or message cannot be used (wrong shape, encoding, NaN, stale...)."""
