"""The public front of ``ionflux`` is curated: this list changes on purpose only."""

import ionflux
from ionflux import _errors

import ionwall


def test_ionflux_all_is_pinned_and_sorted() -> None:
    assert ionflux.__all__ == sorted(ionflux.__all__)
    for name in ionflux.__all__:
        assert hasattr(ionflux, name), name


def test_every_error_has_one_root() -> None:
    errors = [
        obj
        for obj in vars(_errors).values()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == _errors.__name__
    ]
    assert len(errors) > 20
    assert all(issubclass(err, ionflux.IonfluxError) for err in errors)


def test_ionwall_errors_are_also_ionflux_errors() -> None:
    assert issubclass(ionflux.PermissionDenied, ionwall.PermissionDenied)
    assert issubclass(ionflux.ConsentRequired, ionwall.ConsentRequired)
