"""The per-domain limits of a hub, and how they are spelled as hub options.

Xen bounds what each domain may hold: grant-table entries, event-channel ports, and
xenstored's quotas (nodes, watches, transactions...).  A hub uses Xen's defaults unless
told otherwise -- by ``python -m vchansim.hub`` / ``vchansim hub`` options, or, for an
embedded hub a backend starts, by the same options in ``$VCHANSIM_HUB_OPTIONS`` -- so a
test can make a limit small and meet the real error (ENOSPC, E2BIG) where a guest would,
instead of first using the resource up.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NoReturn

from ..errors import ConfigError
from ..xenmodel.events import PORTS_PER_DOMAIN
from ..xenmodel.grants import GRANTS_PER_DOMAIN
from ..xenstore.store import Quotas

#: The XenStore quotas ``--xs-quota`` may set (the fields of Quotas).
XS_QUOTAS = tuple(f.name for f in dataclasses.fields(Quotas))
#: Upper bound of every limit: a u32, as the wire carries counts and numbers.
LIMIT_MAX = 0xFFFFFFFF
#: The option of each limit that is not a XenStore quota, and what it bounds.
_OPTIONS = {
    "grants": ("--grant-limit", "grant-table entries a domain may have outstanding"),
    "ports": ("--port-limit", "event-channel ports a domain may have bound"),
}


@dataclass(frozen=True)
class HubLimits:
    """The per-domain limits of the emulated machine, as Xen's defaults unless chosen.

    Lowering one makes the real error surface where a guest would meet it -- ENOSPC from
    GNT_SHARE or an event bind, ENOSPC/E2BIG from xenstored -- without anything having
    to use the resource up first.
    """

    grants: int = GRANTS_PER_DOMAIN  # grant-table entries a domain may have outstanding
    ports: int = PORTS_PER_DOMAIN  # event-channel ports a domain may have bound
    xenstore: Quotas = field(default_factory=Quotas)  # xenstored's, for unprivileged domains

    def as_dict(self) -> dict[str, object]:
        """The limits as STATE shows them."""
        return asdict(self)

    def changes(self) -> dict[str, object]:
        """The limits that differ from Xen's defaults: ``grants``, ``ports`` and
        ``xenstore.NAME``, with their values."""
        default = _flatten(HubLimits().as_dict())
        return {k: v for k, v in _flatten(self.as_dict()).items() if v != default[k]}


def _flatten(tree: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _count(text: str) -> int:
    """A limit: a whole number 0..LIMIT_MAX."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{LIMIT_MAX}")
    return value


def _quota(text: str) -> tuple[str, int]:
    """``NAME=N`` for ``--xs-quota``: a known quota and its value."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in XS_QUOTAS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=N with NAME one of {', '.join(XS_QUOTAS)}"
        )
    return name, _count(value.strip())


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``--grant-limit``, ``--port-limit`` and ``--xs-quota NAME=N``."""
    default = HubLimits()
    group = parser.add_argument_group("limits (per domain)")
    for name, (option, what) in _OPTIONS.items():
        value = getattr(default, name)
        group.add_argument(
            option,
            type=_count,
            default=value,
            dest=name,
            metavar="N",
            help=f"{what} (default {value})",
        )
    quotas = ", ".join(f"{name} {getattr(default.xenstore, name)}" for name in XS_QUOTAS)
    group.add_argument(
        "--xs-quota",
        type=_quota,
        action="append",
        default=[],
        metavar="NAME=N",
        help=f"a XenStore quota of unprivileged domains, repeatable (defaults: {quotas})",
    )


def limits_from(args: argparse.Namespace) -> HubLimits:
    """The limits ``args`` (parsed with :func:`add_limit_arguments`) ask for."""
    return HubLimits(
        **{name: getattr(args, name) for name in _OPTIONS},
        xenstore=dataclasses.replace(Quotas(), **dict(args.xs_quota)),
    )


def limit_options(limits: HubLimits) -> list[str]:
    """The hub options that give ``limits`` (only those that are not the defaults)."""
    options = []
    for name, value in limits.changes().items():
        if name in _OPTIONS:
            options += [_OPTIONS[name][0], str(value)]
        else:
            options += ["--xs-quota", f"{name.removeprefix('xenstore.')}={value}"]
    return options


class _LimitParser(argparse.ArgumentParser):
    """Parses limit options from somewhere other than the command line: errors raise."""

    def __init__(self, source: str) -> None:
        super().__init__(prog=source, add_help=False)
        self.source = source
        add_limit_arguments(self)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {message}")


def parse_limits(options: Sequence[str], source: str) -> HubLimits:
    """The limits given by ``options`` (hub options, limit options only); ConfigError
    naming ``source`` (where they came from) if they are not valid."""
    return limits_from(_LimitParser(source).parse_args(list(options)))
