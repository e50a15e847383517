"""Registration: importing this module registers every operator family (one import line each)
and installs the operator model's recogniser in the analyse stage."""
from __future__ import annotations

from .. import analyse
from . import check, recognise  # noqa: F401 - check registers the operator model's verify
from . import reaction  # noqa: F401 - the data and reaction family

analyse.register_operator_model(recognise.recognise)
