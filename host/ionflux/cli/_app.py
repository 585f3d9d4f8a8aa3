"""The object every CLI command receives: configuration and parts, built lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import Config, load_config

if TYPE_CHECKING:
    from ..host import Host


@dataclass
class App:
    config_path: Path | None = None
    data_dir: Path | None = None
    _closers: list[object] = field(default_factory=list)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, data_dir=self.data_dir)

    @cached_property
    def host(self) -> Host:
        from ..host import Host

        return Host(self.config)


pass_app = click.make_pass_decorator(App)
