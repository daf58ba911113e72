"""The promotion rule: which registry version of a symbol x target holds `champion`,
`previous-champion` and `challenger`. Pure functions over registry facts; applying the result
twice changes nothing (the rule is a function of the state it produces)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class PromotionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_improvement: float = Field(
        default=0.005,
        ge=0.0,
        description=(
            "A new model replaces the champion only if its held-out score beats the champion's by at least this."
        ),
    )
    min_test_rows: int = Field(
        default=100, ge=1, description="Fewer held-out rows than this: the score is too noisy to promote on."
    )
    challenger_within: float = Field(
        default=0.02, ge=0.0, description="The best runner-up within this of the champion's score holds `challenger`."
    )


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
    ranked: list[Candidate], champion: str | None, champion_score: float | None, settings: PromotionSettings
) -> str | None:
    if champion is None or champion_score is None:
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
    if not ranked:
        action = "kept" if champion else "no champion"
        reason = (
            f"no version qualifies (trained, trusted, beats no skill, at least {settings.min_test_rows} held-out rows)"
        )
        return AliasDecision(
            champion, previous, _challenger(ranked, champion, champion_score, settings), action, reason
        )
    best = ranked[0]
    if champion is None:
        return AliasDecision(
            best.version,
            previous,
            _challenger(ranked, best.version, best.score, settings),
            "promoted",
            f"first champion: {best.family} v{best.version} scores {best.score:.4f}",
        )
    if best.version == champion:
        return AliasDecision(
            champion,
            previous,
            _challenger(ranked, champion, best.score, settings),
            "kept",
            f"v{champion} is still the best qualified version",
        )
    if champion_score is None or best.score >= champion_score + settings.min_improvement:
        was = "an unscored champion" if champion_score is None else f"champion v{champion} ({champion_score:.4f})"
        return AliasDecision(
            best.version,
            champion,
            _challenger(ranked, best.version, best.score, settings),
            "promoted",
            f"{best.family} v{best.version} ({best.score:.4f}) beats {was} by at least {settings.min_improvement}",
        )
    return AliasDecision(
        champion,
        previous,
        _challenger(ranked, champion, champion_score, settings),
        "kept",
        f"best candidate {best.family} v{best.version} ({best.score:.4f}) does not beat champion v{champion} "
        f"({champion_score:.4f}) by {settings.min_improvement}",
    )


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
    if not ranked:
        return AliasDecision(
            None,
            previous,
            None,
            "retired",
            f"v{retired} retired ({reason}); no version qualifies, so the cell has no champion",
        )
    best = ranked[0]
    return AliasDecision(
        best.version,
        previous,
        _challenger(ranked, best.version, best.score, settings),
        "retired",
        f"v{retired} retired ({reason}); {best.family} v{best.version} ({best.score:.4f}) is the best qualified "
        "current version",
    )
