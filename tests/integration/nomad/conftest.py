from __future__ import annotations

from tests.nomad_double.fixtures import nomad_contract, nomad_target  # noqa: F401  (fixtures)
