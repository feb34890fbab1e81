"""The TRL versions the adapter is tested with, and the check run when ``drgym.integrations.trl`` is imported."""

from __future__ import annotations

from drgym.errors import DependencyNotInstalled, missing_dependency

__all__ = ["SUPPORTED_TRL", "check_trl_version", "require_trl"]

SUPPORTED_TRL = ">=1.16,<1.17"
"""The ``[trl]`` extra's range: the adapter reads TRL internals (``rollout_func``, ``environment_factory``,
``env_mask``) that TRL marks experimental and changes between minor versions."""


def check_trl_version(version: str, supported: str = SUPPORTED_TRL) -> None:
    """Raise ``DependencyNotInstalled`` naming ``supported`` when ``version`` is outside it."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        ok = Version(version) in SpecifierSet(supported)
    except InvalidVersion:
        ok = False
    if not ok:
        raise DependencyNotInstalled(
            f"drgym.integrations.trl supports trl{supported}, but trl {version} is installed; "
            f'run pip install "drgym[trl]" (or pip install "trl{supported}")'
        )


def require_trl() -> str:
    """Import TRL, check its version, and return it."""
    try:
        import trl
    except ImportError as exc:
        raise missing_dependency("trl", "trl") from exc
    check_trl_version(trl.__version__)
    return trl.__version__
