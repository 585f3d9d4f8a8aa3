"""{{name}}: built with `ionflux build`, published and called the way the host will."""

import subprocess
import sys
from pathlib import Path

from ionflux.config import load_config
from ionflux.host import Host

HERE = Path(__file__).resolve().parent


def test_upper_cases_text(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "ionflux.cli", "build", str(HERE)], check=True)
    host = Host(load_config(data_dir=tmp_path))
    try:
        host.publish(HERE / "manifest.yaml")
        assert host.invoke("{{name}}", '{"text": "hello"}').value == {"text": "HELLO"}
    finally:
        host.close()
