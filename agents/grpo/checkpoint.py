"""Model construction and checkpoints: weights, tokenizer, optimizer, scheduler, RNG states, data position and
config.

A checkpoint is a directory ``<output_dir>/checkpoint-<step>/`` holding ``model/`` (``save_pretrained``),
``tokenizer/`` (kept apart: a byte tokenizer saved next to a Qwen2 ``config.json`` would be reloaded as the
wrong class), ``trainer_state.pt`` and ``config.yaml``. It is written under a temporary name and renamed into
place, so a crash mid-write never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drgym.errors import ConfigError, missing_dependency

if TYPE_CHECKING:
    from .config import GRPOConfig

__all__ = [
    "ARCHITECTURE_KEYS",
    "build_model",
    "check_architecture",
    "checkpoint_dirs",
    "latest_checkpoint",
    "load_model",
    "load_trainer_state",
    "resolve_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "save_model",
]

logger = logging.getLogger(__name__)

ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
)
"""Model config entries that must agree between a checkpoint and the run that loads it."""

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_STATE = "trainer_state.pt"


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise missing_dependency(exc.name or "torch", "agents") from exc
    return torch, transformers


def resolve_device(name: str) -> Any:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    torch, _ = _imports()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"`device` {name!r} is not a torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`device` is {name!r} but CUDA is not available; use device: auto or cpu")
    return device


def _dtype(cfg: GRPOConfig, device: Any) -> Any:
    torch, _ = _imports()
    if cfg.model_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, cfg.model_dtype)


def build_model(cfg: GRPOConfig, device: Any, texts: Sequence[str] = ()) -> tuple[Any, Any]:
    """The initial policy and its tokenizer: the tiny random model, a drgym checkpoint or warm-start directory
    (``model/`` and ``tokenizer/`` inside), or a pretrained model by hub name or path. ``texts`` (the task's
    text, :attr:`Task.texts`) train the tiny model's tokenizer when ``tiny_vocab`` is ``"word"``."""
    _, transformers = _imports()
    dtype = _dtype(cfg, device)
    own = Path(cfg.model_name_or_path)
    if cfg.model_name_or_path == "tiny":
        from drgym.llm.tiny import tiny_causal_lm

        words = {"texts": list(texts)} if cfg.tiny_vocab == "word" else {}
        model, tokenizer = tiny_causal_lm(cfg.tiny_vocab, seed=cfg.seed, **words, **cfg.tiny_config)
    elif (own / "model").is_dir() and (own / "tokenizer").is_dir():
        model, tokenizer = load_model(own, device, dtype)
    else:
        name = cfg.model_name_or_path
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(name)
            model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load `model_name_or_path` {name!r}: {exc}") from exc
    return model.to(device=device, dtype=dtype), tokenizer


def save_model(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``model/`` and ``tokenizer/`` under ``directory`` (what :func:`load_model` reads)."""
    directory = Path(directory)
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "tokenizer")
    return directory


def check_architecture(directory: str | Path, expected: Any) -> None:
    """Raise ``ConfigError`` when the checkpoint's model config differs from ``expected`` (a model config).

    Comparing before loading turns a cryptic size-mismatch traceback into a message naming what differs.
    """
    _, transformers = _imports()
    path = Path(directory) / "model"
    try:
        saved = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {directory} has no readable model config ({exc})") from exc
    diffs = [
        f"{key}: {getattr(saved, key, None)!r} in the checkpoint, "
        f"{getattr(expected, key, None)!r} in this run"
        for key in ARCHITECTURE_KEYS
        if getattr(saved, key, None) != getattr(expected, key, None)
    ]
    if diffs:
        raise ConfigError(
            f"checkpoint {directory} was written for a different model ({'; '.join(diffs)}). Resume with the "
            f"settings it was trained with (its config.yaml), or start a new run in another output_dir."
        )


def load_model(directory: str | Path, device: Any, dtype: Any = None) -> tuple[Any, Any]:
    """Model and tokenizer of a checkpoint (or of any directory written by :func:`save_model`)."""
    _, transformers = _imports()
    directory = Path(directory)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory / "tokenizer")
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = transformers.AutoModelForCausalLM.from_pretrained(directory / "model", **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the model of checkpoint {directory}: {exc}") from exc
    tokenizer.padding_side = "left"
    return model.to(device), tokenizer


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _CKPT_RE.match(p.name)) and (p / _STATE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir``, or ``None``."""
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from either itself or a run's ``output_dir`` (its newest checkpoint)."""
    path = Path(path)
    if (path / "model").is_dir() and (path / "tokenizer").is_dir():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ConfigError(
            f"{path} is neither a checkpoint (model/ and tokenizer/ inside) nor a run directory with "
            "checkpoint-* folders"
        )
    return latest


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    cfg: GRPOConfig,
    keep: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; with ``keep``, delete all but the newest ``keep`` checkpoints.

    Args:
        state: Trainer state (step, data position, RNG states, counters); saved with ``torch.save``.
    """
    torch, _ = _imports()
    root = Path(output_dir)
    final = root / f"checkpoint-{step:06d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_model(model, tokenizer, tmp)
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **state}, tmp / _STATE
        )
        cfg.to_yaml(tmp / "config.yaml")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(directory: str | Path, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer and scheduler from a checkpoint; return the rest of the trainer state."""
    torch, _ = _imports()
    path = Path(directory) / _STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state.pop("optimizer"))
        scheduler.load_state_dict(state.pop("scheduler"))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint {directory} has an unreadable or mismatched trainer state ({exc})"
        ) from exc
    return state
