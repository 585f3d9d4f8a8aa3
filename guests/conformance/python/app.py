"""The conformance scenario (guests/conformance/README.md) in Python."""

from typing import Any

import ionflux_guest as ion
from ionflux_guest import GuestImportError, Transform


def _call(data: dict[str, Any]) -> Any:
    call = data["call"]
    if call == "log":
        return ion.log.write(data["level"], data["message"])
    if call == "config":
        return ion.config.get(data["key"])
    if call == "pod-get":
        return ion.pod.get(data["reference"])
    if call == "pod-put":
        return ion.pod.put(data["path"], data["data"])
    if call == "bus":
        return ion.bus.publish(data["subject"], data["payload"])
    if call == "http":
        r = ion.http.fetch(data["url"])
        return {"status": r.status, "body": r.body}
    raise ValueError(f"unknown call {call!r}")


class WitWorld(Transform):
    def handle(self, data: dict[str, Any]) -> Any:
        call = data["call"]
        if call == "upper":
            return {"text": data["text"].upper()}
        if call == "trap":
            raise RuntimeError("trapping on purpose")  # uncaught: CPython traps
        if call == "spin":
            n = 0
            while True:
                n += 1
        if call == "print":  # stdout: lines of the log import (emit_log:info)
            for _ in range(int(data.get("repeat", 1))):
                print(data["text"])
            return {"ok": None}
        if call == "sleep":  # a timer: refused (the wait would be beyond the deadline)
            import time

            time.sleep(float(data.get("seconds", 5)))
            return {"slept": True}
        if call == "probe":  # what the sandbox lets CPython see: files, environment, sockets
            return _probe()
        try:
            return {"ok": _call(data)}
        except GuestImportError as err:
            return {"error": {"case": err.case, "message": err.message, "denied": isinstance(err, ion.Denied)}}


def _probe() -> dict[str, Any]:
    import os

    seen: dict[str, Any] = {"environ": dict(os.environ), "cwd_listing": None}
    for path in ("/etc/passwd", "/proc/self/environ", "app.py", "/"):
        try:
            with open(path) as f:
                seen[path] = f.read(64)
        except Exception as exc:  # noqa: BLE001 - the point is which error
            seen[path] = f"{type(exc).__name__}: {exc}"
    try:
        seen["cwd_listing"] = os.listdir(".")
    except Exception as exc:
        seen["cwd_listing"] = f"{type(exc).__name__}: {exc}"
    seen["HOME"] = os.environ.get("HOME")
    try:
        import socket

        s = socket.create_connection(("127.0.0.1", 80), timeout=1)
        seen["socket"] = f"connected {s}"
    except Exception as exc:
        seen["socket"] = f"{type(exc).__name__}: {exc}"
    return seen
