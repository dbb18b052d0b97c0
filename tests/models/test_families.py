"""Every built-in family through the FamilyContract battery (tests/models/family_contract.py)."""
from __future__ import annotations

import pytest
from family_contract import FamilyContract

pytestmark = pytest.mark.usefixtures("one_thread")


class TestWan(FamilyContract):
    family = "wan"
    oracle_skip = ("tiny-lingbot",)      # diffusers has no LingBot-World camera layers


class TestCosmosPredict2(FamilyContract):
    family = "cosmos-predict2"


class TestCosmos3(FamilyContract):
    family = "cosmos3"
