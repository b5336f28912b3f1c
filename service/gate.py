"""The paired gate: promote a candidate only on evidence that it fixes more gate-pool problems than the served
version, never on a tie.

Both versions run the same problems; each problem gives a pair (served ok, candidate ok). Only discordant pairs
carry information: ``wins`` (candidate fixes, served does not) and ``losses`` (the reverse). Under the null
hypothesis "no difference" each discordant pair is a win with probability 1/2, so the one-sided p-value of
the sign test is P[Binomial(wins + losses, 1/2) >= wins]. The candidate is promoted when

* p <= ``alpha`` (default 0.05; p is a multiple of 2^-n, so it never equals 0.05; alpha = 1 switches the
  test off, for smoke runs with a model that cannot show a gain),
* net gain ``wins - losses`` >= ``min_net_gain`` (default 2 problems), and
* no family loses more than ``max_family_net_loss`` problems net (default 1).

A no-op candidate (identical outcomes, or flips that cancel) has p ~ 1/2 or no discordant pairs at all and
is rejected; so is one that regresses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class GateInputError(ValueError):
    """The two outcome vectors do not describe the same problems."""


@dataclass(frozen=True)
class GateConfig:
    alpha: float = 0.05
    min_net_gain: int = 2
    max_family_net_loss: int = 1


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P[X >= wins] for X ~ Binomial(wins + losses, 1/2); 1.0 with no discordance."""
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses must be non-negative")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(wins, n + 1))
    return min(1.0, tail / 2**n)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95% Wilson score interval of k successes in n trials (None for n = 0): how pass rates are reported."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class GateResult:
    promoted: bool
    reason: str
    n: int
    wins: int
    losses: int
    p_value: float
    pass_before: float
    pass_after: float
    family_net: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "n": self.n,
            "wins": self.wins,
            "losses": self.losses,
            "p_value": self.p_value,
            "pass_before": self.pass_before,
            "pass_after": self.pass_after,
            "family_net": dict(self.family_net),
        }


def paired_gate(
    served: Mapping[str, bool],
    candidate: Mapping[str, bool],
    family_of: Mapping[str, str],
    config: GateConfig | None = None,
) -> GateResult:
    """Decide on promotion from per-problem outcomes of the served version and the candidate (same ids)."""
    config = config or GateConfig()
    if set(served) != set(candidate):
        missing = sorted(set(served) ^ set(candidate))
        raise GateInputError(f"served and candidate outcomes differ in problems: {', '.join(missing[:8])}")
    if not served:
        raise GateInputError("the gate pool is empty")
    unknown = sorted(set(served) - set(family_of))
    if unknown:
        raise GateInputError(f"no family for problems: {', '.join(unknown[:8])}")
    wins = losses = 0
    family_net: dict[str, int] = {}
    for pid in sorted(served):
        before, after = bool(served[pid]), bool(candidate[pid])
        delta = int(after) - int(before)
        wins += delta == 1
        losses += delta == -1
        family = family_of[pid]
        family_net[family] = family_net.get(family, 0) + delta
    n = len(served)
    p = sign_test_p(wins, losses)
    net = wins - losses
    worst = min(family_net.items(), key=lambda kv: (kv[1], kv[0]))
    if -worst[1] > config.max_family_net_loss:
        promoted, reason = False, f"family {worst[0]} loses {-worst[1]} problem(s) net"
    elif net < config.min_net_gain:
        promoted, reason = False, f"net gain {net} < {config.min_net_gain} (wins {wins}, losses {losses})"
    elif p > config.alpha:
        promoted, reason = False, f"sign test p = {p:.4f} > {config.alpha} (wins {wins}, losses {losses})"
    else:
        promoted, reason = True, f"promoted: +{net} net (wins {wins}, losses {losses}), p = {p:.4f}"
    return GateResult(
        promoted=promoted,
        reason=reason,
        n=n,
        wins=wins,
        losses=losses,
        p_value=p,
        pass_before=sum(map(bool, served.values())) / n,
        pass_after=sum(map(bool, candidate.values())) / n,
        family_net=family_net,
    )
