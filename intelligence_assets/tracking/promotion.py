"""The promotion rule: which registry version of a symbol x target holds `champion`,
`previous-champion` and `challenger`. Pure functions over registry facts; applying the result
twice changes nothing (the rule is a function of the state it produces)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class PromotionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    min_improvement: float = Field(default=0.005, ge=0.0)
    """A new model replaces the champion only if its held-out score beats the champion's by at least this."""
    min_test_rows: int = Field(default=100, ge=1)
    """Fewer held-out rows than this: the score is too noisy to promote on."""
    challenger_within: float = Field(default=0.02, ge=0.0)
    """The best runner-up within this of the champion's score holds `challenger`."""


@dataclass(frozen=True)
class Candidate:
    """A registered version that the current leaderboard ranks."""

    version: str
    family: str
    score: float | None
    test_rows: int
    eligible: bool  # trained, trusted by the leakage sentinel, beats no skill
    rolled_back: bool = False


@dataclass(frozen=True)
class AliasDecision:
    champion: str | None
    previous_champion: str | None
    challenger: str | None
    action: str  # promoted | kept | rolled back | no champion
    reason: str


def qualified(candidates: list[Candidate], settings: PromotionSettings) -> list[Candidate]:
    """Versions that may hold an alias, best first (ties broken by family name for determinism)."""
    usable = [
        c
        for c in candidates
        if c.eligible and not c.rolled_back and c.score is not None and c.test_rows >= settings.min_test_rows
    ]
    return sorted(usable, key=lambda c: (-c.score, c.family, int(c.version)))


def _challenger(
    ranked: list[Candidate], champion: str | None, recorded_score: float | None, settings: PromotionSettings
) -> str | None:
    """The best runner-up within `challenger_within` of the champion's score: its leaderboard score
    when it is the best qualified version, else `recorded_score` (the score recorded for it)."""
    if champion is None:
        return None
    champion_score = ranked[0].score if ranked and ranked[0].version == champion else recorded_score
    if champion_score is None:
        return None
    for candidate in ranked:
        if candidate.version != champion and candidate.score >= champion_score - settings.challenger_within:
            return candidate.version
    return None


def decide_aliases(
    candidates: list[Candidate], current: dict[str, str], champion_score: float | None, settings: PromotionSettings
) -> AliasDecision:
    """`current`: alias -> version now; `champion_score`: the current champion's recorded score."""
    from intelligence_assets.tracking.names import CHAMPION, PREVIOUS_CHAMPION

    ranked = qualified(candidates, settings)
    champion, previous = current.get(CHAMPION), current.get(PREVIOUS_CHAMPION)
    best = ranked[0] if ranked else None
    if best is None:
        action = "kept" if champion else "no champion"
        reason = (
            f"no version qualifies (trained, trusted, beats no skill, at least {settings.min_test_rows} held-out rows)"
        )
    elif champion is None:
        champion, action = best.version, "promoted"
        reason = f"first champion: {best.family} v{best.version} scores {best.score:.4f}"
    elif best.version == champion:
        action, reason = "kept", f"v{champion} is still the best qualified version"
    elif champion_score is None or best.score >= champion_score + settings.min_improvement:
        was = "an unscored champion" if champion_score is None else f"champion v{champion} ({champion_score:.4f})"
        champion, previous, action = best.version, champion, "promoted"
        reason = f"{best.family} v{best.version} ({best.score:.4f}) beats {was} by at least {settings.min_improvement}"
    else:
        action = "kept"
        reason = (
            f"best candidate {best.family} v{best.version} ({best.score:.4f}) does not beat champion v{champion} "
            f"({champion_score:.4f}) by {settings.min_improvement}"
        )
    return AliasDecision(champion, previous, _challenger(ranked, champion, champion_score, settings), action, reason)


def roll_back(current: dict[str, str], reason: str) -> AliasDecision:
    """`champion` back to `previous-champion`. Raises ValueError when there is nothing to go back to."""
    from intelligence_assets.tracking.names import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    champion, previous = current.get(CHAMPION), current.get(PREVIOUS_CHAMPION)
    if champion is None or previous is None:
        raise ValueError(
            f"cannot roll back: champion is {champion!r} and previous-champion is {previous!r}; both must exist"
        )
    challenger = current.get(CHALLENGER)
    return AliasDecision(
        previous,
        None,
        None if challenger in (previous, champion) else challenger,
        "rolled back",
        f"v{champion} -> v{previous}: {reason}",
    )


def retire(
    candidates: list[Candidate], current: dict[str, str], settings: PromotionSettings, reason: str
) -> AliasDecision:
    """The champion stops serving (its model is no longer current, or its symbol left the
    universe): the best qualified version takes over without the min_improvement margin, or the
    cell has no champion. Needs no previous champion; the retired version never becomes one, so
    a rollback cannot bring it back."""
    from intelligence_assets.tracking.names import CHAMPION, PREVIOUS_CHAMPION

    retired = current.get(CHAMPION)
    ranked = [candidate for candidate in qualified(candidates, settings) if candidate.version != retired]
    previous = current.get(PREVIOUS_CHAMPION)
    previous = None if previous == retired else previous
    best = ranked[0] if ranked else None
    champion = best.version if best else None
    successor = (
        f"{best.family} v{best.version} ({best.score:.4f}) is the best qualified current version"
        if best
        else "no version qualifies, so the cell has no champion"
    )
    return AliasDecision(
        champion,
        previous,
        _challenger(ranked, champion, None, settings),
        "retired",
        f"v{retired} retired ({reason}); {successor}",
    )
