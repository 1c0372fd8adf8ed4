"""The demo's hospital EHR side: a RIS taking ORU^R01 over MLLP (:2575) and a FHIR server
taking transactions (:8144), the same real servers the tests use (tests/support). What each
receives is written to var/demo/ehr/ for `make demo` to show; runs until stopped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.fhir import FhirServer  # noqa: E402
from tests.support.hl7 import MllpReceiver  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ris = MllpReceiver("AA", port=2575)
    fhir = FhirServer(port=8144)
    written = [0, 0]
    while True:
        for i, message in enumerate(ris.received[written[0] :], start=written[0]):
            (out / f"oru-{i + 1}.hl7").write_text(message.replace("\r", "\n"))
        written[0] = len(ris.received)
        for i, bundle in enumerate(fhir.transactions[written[1] :], start=written[1]):
            (out / f"fhir-{i + 1}.json").write_text(json.dumps(bundle, indent=1))
        written[1] = len(fhir.transactions)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
