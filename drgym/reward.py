"""Answer metrics and the episode reward.

Two families of metrics live side by side because they disagree on purpose: the DeepResearcher paper's
normalisation (punctuation becomes a space, articles are kept, F1 over token *sets*), which its reward and
reported F1 use, and SQuAD's (punctuation deleted, articles dropped, F1 over token *multisets*), which most
other QA work reports. The format rule is applied to the policy's own turns only, never to tool output, so a
web page that contains ``<answer>`` cannot change a reward.
"""

from __future__ import annotations

import difflib
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from drgym.errors import ConfigError
from drgym.protocol import clean_text, scan_turn

__all__ = [
    "ANSWER_SPLIT",
    "REWARD_MODES",
    "Score",
    "check_format",
    "em_paper",
    "em_squad",
    "extract_answer",
    "f1_paper",
    "f1_squad",
    "normalize_paper",
    "normalize_squad",
    "score_answer",
    "score_episode",
    "split_gold",
]

ANSWER_SPLIT = "<|answer_split|>"
REWARD_MODES = ("paper", "f1", "em", "squad_f1")

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)
_SQUAD_PUNCT = str.maketrans("", "", string.punctuation)


# ------------------------------------------------------------------------------------------------- golds


def split_gold(answers: str | Sequence[str]) -> list[str]:
    """Gold answers as a flat list: strings split on ``<|answer_split|>``, nested lists flattened, each item
    stripped, empty items dropped. Non-string scalars (a year stored as an int) are converted with ``str``.

    Raises:
        ConfigError: A mapping is given where answers are expected.
    """
    out: list[str] = []
    _collect_gold(answers, out)
    return out


def _collect_gold(item: Any, out: list[str]) -> None:
    if item is None:
        return
    if isinstance(item, bytes):
        item = item.decode("utf-8", errors="replace")
    if isinstance(item, str):
        out.extend(part.strip() for part in item.split(ANSWER_SPLIT) if part.strip())
    elif isinstance(item, Mapping):
        raise ConfigError(f"gold answers must be strings or lists of strings, got {type(item).__name__}.")
    elif isinstance(item, Iterable):
        for sub in item:
            _collect_gold(sub, out)
    else:
        text = str(item).strip()
        if text:
            out.append(text)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _golds_or_raise(golds: str | Sequence[str]) -> list[str]:
    gold_list = split_gold(golds)
    if not gold_list:
        raise ConfigError(
            f"no gold answers to score against (got {_short_repr(golds)}); "
            "give at least one non-empty answer."
        )
    return gold_list


# ------------------------------------------------------------------------------------- paper's metrics


def _paper_punct_to_space(char: str) -> str:
    return " " if char in _ASCII_PUNCT or unicodedata.category(char).startswith("P") else char


def normalize_paper(s: str) -> str:
    """The paper's normalisation: lowercase, each punctuation character → space, whitespace collapsed.

    Articles are kept ("the beatles" stays two tokens), unlike SQuAD's normalisation.
    """
    return " ".join("".join(map(_paper_punct_to_space, s.lower())).split())


def _set_f1(pred_tokens: set[str], gold_tokens: set[str]) -> float:
    common = len(pred_tokens & gold_tokens)
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _max_over_golds(
    pred: str | None, golds: str | Sequence[str], metric: Callable[[str, str], float]
) -> float:
    gold_list = _golds_or_raise(golds)
    if not isinstance(pred, str):
        return 0.0
    return max(metric(pred, gold) for gold in gold_list)


def _f1_paper_one(pred: str, gold: str) -> float:
    return _set_f1(set(normalize_paper(pred).split()), set(normalize_paper(gold).split()))


def _em_paper_one(pred: str, gold: str) -> float:
    norm = normalize_paper(pred)
    return float(bool(norm) and norm == normalize_paper(gold))


def f1_paper(pred: str | None, golds: str | Sequence[str]) -> float:
    """Word-level F1 over token sets after :func:`normalize_paper`, maximum over the golds.

    An empty prediction (None, or nothing left after normalising) scores 0. Raises ConfigError when there is
    no gold answer.
    """
    return _max_over_golds(pred, golds, _f1_paper_one)


def em_paper(pred: str | None, golds: str | Sequence[str]) -> float:
    """1.0 when the prediction equals a gold after :func:`normalize_paper` (and is not empty), else 0.0."""
    return _max_over_golds(pred, golds, _em_paper_one)


# ------------------------------------------------------------------------------------- SQuAD's metrics


def normalize_squad(s: str) -> str:
    """SQuAD's normalisation: lowercase, ASCII punctuation and the articles a/an/the dropped, spaces fixed."""
    return " ".join(_ARTICLES_RE.sub(" ", s.lower().translate(_SQUAD_PUNCT)).split())


def _f1_squad_one(pred: str, gold: str) -> float:
    return _multiset_f1(normalize_squad(pred).split(), normalize_squad(gold).split())


def _multiset_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _em_squad_one(pred: str, gold: str) -> float:
    norm = normalize_squad(pred)
    return float(bool(norm) and norm == normalize_squad(gold))


def f1_squad(pred: str | None, golds: str | Sequence[str]) -> float:
    """SQuAD's F1 (token multiset overlap after :func:`normalize_squad`), maximum over the golds."""
    return _max_over_golds(pred, golds, _f1_squad_one)


def em_squad(pred: str | None, golds: str | Sequence[str]) -> float:
    """SQuAD's exact match after :func:`normalize_squad`, maximum over the golds."""
    return _max_over_golds(pred, golds, _em_squad_one)


# ------------------------------------------------------------------------------------ format and answer


def _as_turns(policy_turns: Sequence[str] | str) -> list[Any]:
    return [policy_turns] if isinstance(policy_turns, str) else list(policy_turns)


def _answer_block_text(policy_turns: Sequence[str] | str) -> str | None:
    """Raw content of the first answer that is a turn's action.

    An answer written after a tool call in the same turn is not one: the call closed first, so the turn was a
    tool turn (a model stops generating at ``</tool_call>``), and the environment treated it so.
    """
    for turn in _as_turns(policy_turns):
        if not isinstance(turn, str):
            continue
        action = scan_turn(turn).action
        if action is not None and action.tag == "answer":
            return turn[action.start : action.stop]
    return None


def check_format(policy_turns: Sequence[str], *, max_chars: int | None = None) -> tuple[bool, str | None]:
    """The paper's format rule on the policy's own turns (pass no tool output).

    Every turn must have balanced ``think``/``tool_call``/``answer`` tags, and some turn's action must be an
    ``<answer>`` (one outside a think block: :func:`drgym.protocol.scan_turn`). Returns ``(True, None)`` or ``(False, reason)``; a bare string counts as one turn.

    Args:
        policy_turns: The policy's turns, in order.
        max_chars: When given, a longer turn also breaks the format, matching
            :func:`drgym.protocol.parse_turn`'s ``too_long`` (a model cut off at its token limit never
            finishes its answer).
    """
    turns = _as_turns(policy_turns)
    if not turns:
        return False, "no policy turns"
    answered = False  # some turn's action is an answer (one tag scan per turn gives both verdicts)
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, str):
            return False, f"turn {i} is {type(turn).__name__}, not text"
        if max_chars is not None and len(turn) > max_chars:
            return False, f"turn {i} is {len(turn)} characters long, over the limit of {max_chars}"
        tags = scan_turn(turn)
        if tags.problem is not None:
            return False, f"turn {i}: {tags.problem}"
        answered = answered or (tags.action is not None and tags.action.tag == "answer")
    if not answered:
        return False, "no turn ends with an <answer>"
    return True, None


def extract_answer(policy_turns: Sequence[str]) -> str | None:
    """The first ``<answer>`` that is a turn's action, stripped (the policy's answer), or None."""
    raw = _answer_block_text(policy_turns)
    return None if raw is None else clean_text(raw).strip()


# ------------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class Score:
    """The outcome of one episode.

    ``reward`` follows the mode; the metrics are the evaluation ones (0 when the format is broken);
    ``answer`` is what the policy answered even then, ``reason`` why the format was rejected.
    """

    reward: float
    f1: float
    em: float
    squad_f1: float
    squad_em: float
    format_ok: bool
    answer: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, ready for JSON."""
        return asdict(self)


def score_episode(
    policy_turns: Sequence[str],
    golds: str | Sequence[str],
    mode: str = "paper",
    *,
    max_chars: int | None = None,
) -> Score:
    """Score an episode from the policy's turns (no tool output) against the gold answers.

    Modes: ``paper`` gives −1 when the format is broken, else the paper's F1 (the training reward); ``f1``,
    ``em`` (paper normalisation) and ``squad_f1`` give 0 when the format is broken, else that metric (the
    evaluation convention). ``max_chars`` is passed to :func:`check_format`; give the limit the turns were
    parsed with, so a turn rejected as too long cannot still earn a reward.

    Raises:
        ConfigError: ``mode`` is unknown, or there is no gold answer.
    """
    _check_mode(mode)
    format_ok, reason = check_format(policy_turns, max_chars=max_chars)
    return score_answer(extract_answer(policy_turns), golds, mode, format_ok=format_ok, reason=reason)


def _check_mode(mode: str) -> None:
    if mode not in REWARD_MODES:
        close = difflib.get_close_matches(str(mode), REWARD_MODES, n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise ConfigError(f"unknown reward mode {mode!r}; valid modes: {', '.join(REWARD_MODES)}.{hint}")


def score_answer(
    answer: str | None,
    golds: str | Sequence[str],
    mode: str = "paper",
    *,
    format_ok: bool = True,
    reason: str | None = None,
) -> Score:
    """Score an answer whose format verdict is already known (the env tracks it turn by turn while parsing,
    so the end of an episode need not parse every turn again). ``score_episode`` is this plus the check."""
    _check_mode(mode)
    gold_list = _golds_or_raise(golds)
    if not format_ok:
        return Score(-1.0 if mode == "paper" else 0.0, 0.0, 0.0, 0.0, 0.0, False, answer, reason)
    metrics = {
        "f1": f1_paper(answer, gold_list),
        "em": em_paper(answer, gold_list),
        "squad_f1": f1_squad(answer, gold_list),
        "squad_em": em_squad(answer, gold_list),
    }
    reward = metrics["f1"] if mode == "paper" else metrics[mode]
    return Score(reward=reward, format_ok=True, answer=answer, reason=None, **metrics)
