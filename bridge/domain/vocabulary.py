"""The words a case is described in, written once: subspecialties and priorities (settings,
the API, the CLI and the console's forms take them from here), report statuses and the agreement
of a second opinion with the original report."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

Subspecialty = Literal[
    "neuro", "msk", "body", "chest", "breast", "cardiac", "pediatric", "oncology", "general"
]
Priority = Literal["routine", "urgent", "stat"]

SUBSPECIALTIES: tuple[str, ...] = get_args(Subspecialty)
PRIORITIES: tuple[str, ...] = get_args(Priority)


class Status(StrEnum):
    """A report's status."""

    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"


class Agreement(StrEnum):
    """How the second opinion relates to the original report."""

    CONCORDANT = "concordant"
    MINOR_DISCREPANCY = "minor_discrepancy"
    MAJOR_DISCREPANCY = "major_discrepancy"
    NOT_ASSESSED = "not_assessed"


AGREEMENT_TEXT = {
    Agreement.CONCORDANT: "Concordant with the original report.",
    Agreement.MINOR_DISCREPANCY: "Minor discrepancy with the original report.",
    Agreement.MAJOR_DISCREPANCY: "Major discrepancy with the original report.",
    Agreement.NOT_ASSESSED: "Agreement with the original report not assessed.",
}

#: The agreement in words a patient follows, opening the summary for the patient.
AGREEMENT_PLAIN = {
    Agreement.CONCORDANT: "The second opinion agrees with the original report.",
    Agreement.MINOR_DISCREPANCY: (
        "The second opinion differs from the original report in a minor point."
    ),
    Agreement.MAJOR_DISCREPANCY: (
        "The second opinion differs from the original report in an important point: "
        "please discuss it with your doctor."
    ),
    Agreement.NOT_ASSESSED: "The second opinion was not compared with the original report.",
}
