"""Building the policy, and reading what a run saved.

TRL's trainer writes the checkpoints: ``<output_dir>/checkpoint-<step>/`` holds the model
(``save_pretrained``), the tokenizer, and TRL's optimizer, scheduler, RNG and trainer state; drgym adds its
``config.yaml`` (the run's settings) to each, and to the final save in ``output_dir`` itself. The warm-start is
saved apart as ``<output_dir>/warmstart/`` with ``model/`` and ``tokenizer/`` inside: it is the reference model
of the KL term and where a resumed run rebuilds its policy before TRL loads the checkpoint's weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drgym.errors import ConfigError, missing_dependency

if TYPE_CHECKING:
    from .config import GRPOConfig

__all__ = [
    "ARCHITECTURE_KEYS",
    "CONFIG_FILE",
    "build_model",
    "check_architecture",
    "latest_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_model",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
"""drgym's settings of the run, beside each checkpoint's weights (the model's own is ``config.json``)."""

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


def _transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise missing_dependency(exc.name or "torch", "agents") from exc
    return transformers


def _dtype(cfg: GRPOConfig) -> Any:
    import torch

    if cfg.model_dtype == "auto":
        gpu = torch.cuda.is_available() and not cfg.use_cpu
        return torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, cfg.model_dtype)


def build_model(cfg: GRPOConfig, texts: Sequence[str] = ()) -> tuple[Any, Any]:
    """The initial policy and its tokenizer (on the CPU: the trainer places it): the tiny random model, a
    directory a run saved, or a pretrained model by hub name or path. ``texts`` (the task's text) train the tiny
    model's tokenizer when ``tiny_vocab`` is ``"word"``."""
    transformers = _transformers()
    dtype = _dtype(cfg)
    if cfg.model_name_or_path == "tiny":
        from drgym.llm.tiny import tiny_causal_lm

        words = {"texts": list(texts)} if cfg.tiny_vocab == "word" else {}
        model, tokenizer = tiny_causal_lm(cfg.tiny_vocab, seed=cfg.seed, **words, **cfg.tiny_config)
    elif _layout(Path(cfg.model_name_or_path)) is not None:
        model, tokenizer = load_model(cfg.model_name_or_path, dtype)
    else:
        name = cfg.model_name_or_path
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(name)
            model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load `model_name_or_path` {name!r}: {exc}") from exc
    if cfg.chat_template is not None:
        tokenizer.chat_template = cfg.chat_template
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model.to(dtype=dtype), tokenizer


def save_model(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``model/`` and ``tokenizer/`` under ``directory`` (the warm-start's layout)."""
    directory = Path(directory)
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "tokenizer")
    return directory


def _layout(directory: Path) -> tuple[Path, Path] | None:
    """Where a saved directory keeps its model and tokenizer: ``model/`` + ``tokenizer/`` (the warm-start), or
    both at the top (TRL's checkpoints and final save); ``None`` when it holds no model."""
    if (directory / "model" / "config.json").is_file() and (directory / "tokenizer").is_dir():
        return directory / "model", directory / "tokenizer"
    if (directory / "config.json").is_file() and (directory / "tokenizer_config.json").is_file():
        return directory, directory
    return None


def check_architecture(directory: str | Path, expected: Any) -> None:
    """Raise ``ConfigError`` when the saved model's config differs from ``expected`` (a model config).

    Comparing before loading turns a cryptic size-mismatch traceback into a message naming what differs.
    """
    transformers = _transformers()
    layout = _layout(Path(directory))
    if layout is None:
        raise ConfigError(f"{directory} holds no saved model (config.json)")
    saved = transformers.AutoConfig.from_pretrained(layout[0])
    diffs = [
        f"{key}: {getattr(saved, key, None)!r} in the checkpoint, {getattr(expected, key, None)!r} in this run"
        for key in ARCHITECTURE_KEYS
        if getattr(saved, key, None) != getattr(expected, key, None)
    ]
    if diffs:
        raise ConfigError(
            f"checkpoint {directory} was written for a different model ({'; '.join(diffs)}). Resume with the "
            f"settings it was trained with (its {CONFIG_FILE}), or start a new run in another output_dir."
        )


def load_model(directory: str | Path, dtype: Any = None) -> tuple[Any, Any]:
    """Model and tokenizer of a directory a run saved (either layout, see :func:`resolve_checkpoint`)."""
    transformers = _transformers()
    layout = _layout(Path(directory))
    if layout is None:
        raise ConfigError(f"cannot load a model from {directory}: it holds no config.json and tokenizer")
    try:
        tokenizer = _tokenizer_class(layout[1]).from_pretrained(layout[1])
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = transformers.AutoModelForCausalLM.from_pretrained(layout[0], **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the model of {directory}: {exc}") from exc
    tokenizer.padding_side = "left"
    return model, tokenizer


def _tokenizer_class(directory: Path) -> Any:
    """The class ``tokenizer_config.json`` names. ``AutoTokenizer`` would prefer the model's (next to a Qwen2
    ``config.json``, a saved ``ByT5Tokenizer`` reloads as a ``Qwen2Tokenizer`` with no vocabulary)."""
    import json

    transformers = _transformers()
    try:
        name = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError):
        name = None
    return getattr(transformers, name, None) or transformers.AutoTokenizer if name else transformers.AutoTokenizer


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-<step>`` TRL wrote under ``output_dir``, or ``None``."""
    from transformers.trainer_utils import get_last_checkpoint

    root = Path(output_dir)
    found = get_last_checkpoint(str(root)) if root.is_dir() else None
    return Path(found) if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """What ``--checkpoint DIR`` names: a checkpoint or saved directory itself, else a run's ``output_dir``
    (its final save when the run finished, else its newest ``checkpoint-<step>``)."""
    path = Path(path)
    if _layout(path) is not None and (path / CONFIG_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None or _layout(latest) is None:
        raise ConfigError(
            f"{path} is neither a saved model with its {CONFIG_FILE} (a checkpoint-N, or a run's final save) "
            "nor a run directory with checkpoint-N folders"
        )
    return latest
