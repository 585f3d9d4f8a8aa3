"""{{name}}: {"text": s} -> {"text": S}. Built by `ionflux build` (componentize-py)."""

from typing import Any

import ionflux_guest as ion
from ionflux_guest import Transform


class WitWorld(Transform):
    def handle(self, data: dict[str, Any]) -> Any:
        try:
            ion.log.info("upper-casing")  # needs the scope emit_log:info, else Denied
        except ion.Denied:
            pass
        return {"text": data["text"].upper()}
