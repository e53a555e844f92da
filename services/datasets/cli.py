"""`testdata replay` and `testdata export`: argument parsing and the runs around them."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.kit.console import bootstrap_arg, bootstrap_for, reach_broker
from services.kit.errors import UserError
from services.kit.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.datasets.log import Selection


def _user_error(message: str) -> Exception:
    return UserError(message)


def _ms(text: str | None) -> int | None:
    """An RFC 3339 instant (or epoch milliseconds) as epoch milliseconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from services.core.reproducible import parse_anchor

    try:
        return int(parse_anchor(text).timestamp() * 1000)
    except ValueError as exc:
        raise _user_error(f"not a time: {text!r} (RFC 3339, e.g. 2026-11-22T10:00:00Z)") from exc


def _window(args: argparse.Namespace) -> Any:
    from services.datasets.log import Window

    return Window(
        since_ms=_ms(args.since),
        until_ms=_ms(args.until),
        from_offset=getattr(args, "from_offset", None),
        to_offset=getattr(args, "to_offset", None),
        partition=getattr(args, "partition", None),
    )


@contextmanager
def _bar(total: int | None, what: str, quiet: bool) -> Iterator[Callable[[int], Any]]:
    from tqdm import tqdm

    with tqdm(
        total=total,
        unit=what,
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        leave=False,
    ) as bar:
        yield bar.update


def _selection_of(args: argparse.Namespace) -> Selection:
    """The Selection (datasets/log.py) the flags name, shared by replay and export."""
    from services.datasets.log import Selection
    from services.kit.wire.tenancy import valid_tenant

    tenants = list(dict.fromkeys(args.tenant or []))
    for t in tenants:
        if not valid_tenant(t):
            raise _user_error(f"not a tenant name: {t!r} (letters, digits, '_', '.', '-')")
    return Selection.of(args.request_id or [], args.domain, args.entity, tenants)


def _signing_key(args: argparse.Namespace, settings: Settings, bootstrap: str) -> bytes | None:
    """The key the services on `bootstrap` vouch for tenants with (kit/runfile.py: the
    environment's, else the running `testdata run`'s); without one, a request's tenant is
    taken as its header says, so `--tenant` says that it cannot tell a forged one."""
    from services.kit.ops.runfile import locate_signing_key

    key = locate_signing_key(settings, bootstrap)
    if key is None and args.tenant:
        print(
            "no signing key (CHUNK_SIGNING_KEY, or a running testdata run's): requests' "
            "tenants are taken as their headers say, not verified",
            file=sys.stderr,
        )
    return key


def _unmatched(args: argparse.Namespace, found: Any) -> list[str]:
    """The `--request-id`s that match nothing, each said on stderr."""
    have = {r.request.request_id for r in found}
    missing = [i for i in dict.fromkeys(args.request_id or []) if i not in have]
    for i in missing:
        print(
            f"no logged request matches --request-id {i} (in that range, with those filters)",
            file=sys.stderr,
        )
    return missing


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from services.client import KafkaTestDataClient
    from services.datasets.log import Window, dataset_of, read_requests, read_results
    from services.datasets.replay import replay, summary
    from services.kit.wire.topics import Topics

    select = _selection_of(args)
    bootstrap = bootstrap_for(args, settings)
    key = _signing_key(args, settings, bootstrap)
    topics = Topics(settings.topic_prefix)
    with _bar(None, "req", args.quiet) as tick:
        requests, bad = await reach_broker(
            read_requests(
                bootstrap,
                topics.requests,
                _window(args),
                key=key,
                keep=select.keep,
                progress=tick,
            ),
            bootstrap,
        )
    requests = [r for r in requests if not r.request.replay_of or args.include_replays]
    missing = _unmatched(args, requests)
    ids = {r.request.request_id for r in requests}
    originals = {}
    if args.verify or args.path:
        with _bar(None, "chunk", args.quiet) as tick:
            originals = await read_results(
                bootstrap, topics.results, Window(), ids, tick, data=False
            )
    if args.path:
        requests = [r for r in requests if (o := dataset_of(originals, r)) and o.path == args.path]
    if not requests:
        print("nothing to replay in that range", file=sys.stderr)
        return 0 if not args.verify and not missing else 1
    if args.limit:
        requests = requests[: args.limit]
    async with KafkaTestDataClient(
        bootstrap, topic_prefix=settings.topic_prefix, timeout_s=args.timeout, signing_key=key
    ) as client:
        with _bar(len(requests), "req", args.quiet) as tick:
            verdicts = await replay(
                client,
                requests,
                originals,
                verify=args.verify,
                concurrency=args.concurrency,
                progress=tick,
            )
    print(summary(verdicts))
    if bad:
        print(f"({bad} records on the requests topic were not requests and were skipped)")
    return 0 if all(v.ok for v in verdicts) and not missing else 1


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from services.core.registry import SchemaRegistry
    from services.datasets.export import export
    from services.datasets.fetch import LogChunks
    from services.datasets.log import Window, read_requests, read_results
    from services.datasets.sinks import ONE_TABLE
    from services.kit.wire.topics import Topics

    select = _selection_of(args)
    bootstrap = bootstrap_for(args, settings)
    key = _signing_key(args, settings, bootstrap)
    topics = Topics(settings.topic_prefix)
    requests, _ = await reach_broker(
        read_requests(bootstrap, topics.requests, _window(args), key=key, keep=select.keep),
        bootstrap,
    )
    requests = [r for r in requests if not r.request.replay_of or args.include_replays]
    missing = _unmatched(args, requests)
    if args.combined and args.format in ONE_TABLE:
        entities = {r.request.entity for r in requests}
        if len(entities) > 1:
            raise _user_error(
                f"one {args.format.upper()} file needs one entity; these are "
                f"{sorted(entities)}: use --entity"
            )
    ids = {r.request.request_id for r in requests}
    with _bar(None, "chunk", args.quiet) as tick:
        results = await read_results(bootstrap, topics.results, Window(), ids, tick, data=False)
    async with LogChunks(bootstrap, topics.results) as chunks:
        with _bar(len(requests), "dataset", args.quiet) as tick:
            done = await export(
                requests,
                results,
                SchemaRegistry.load(),
                args.format,
                Path(args.out),
                args.combined,
                tick,
                chunks.data,
            )
    written = [d for d in done if d.status == "written"]
    for d in done:
        if d.status != "written":
            print(f"  {d.request_id} (tenant {d.tenant}): incomplete: {d.how}")
    n = sum(d.records for d in written)
    print(
        f"{len(written)} datasets, {n:,} records written to {args.out}; "
        f"{len(done) - len(written)} incomplete"
        + (f"; {len(missing)} --request-id matched nothing" if missing else "")
    )
    return 0 if len(written) == len(done) and not missing else 1


def cmd_replay(args: argparse.Namespace) -> int:
    return asyncio.run(_replay(args, get_settings()))


def cmd_export(args: argparse.Namespace) -> int:
    return asyncio.run(_export(args, get_settings()))


def _selection(p: argparse.ArgumentParser) -> None:

    p.add_argument("--since", help="from this time (RFC 3339 or epoch ms)")
    p.add_argument("--until", help="up to this time (RFC 3339 or epoch ms)")
    p.add_argument("--request-id", action="append", help="this request (repeatable)")
    p.add_argument("--domain", help="only requests of this domain (theirs, else their entity's)")
    p.add_argument("--entity", help="only requests for this entity")
    p.add_argument(
        "--tenant",
        action="append",
        metavar="NAME",
        help="only requests of this tenant, as a bridge vouched for it (repeatable; "
        "`local`: unauthenticated callers and agents on Kafka)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    bootstrap_arg(p)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("replay", help="regenerate logged requests through the pipeline")
    _selection(p)
    p.add_argument("--from-offset", type=int, help="first offset of the requests topic to read")
    p.add_argument("--to-offset", type=int, help="offset to stop before")
    p.add_argument("--partition", type=int, help="only this partition of the requests topic")
    p.add_argument("--path", help="only requests the original served on this path")
    p.add_argument("--verify", action="store_true", help="compare each dataset with the original")
    p.add_argument("--include-replays", action="store_true", help="earlier replays too")
    p.add_argument("--limit", type=int, help="at most this many requests")
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("export", help="write logged datasets to files")
    _selection(p)
    p.add_argument(
        "--format",
        choices=("jsonl", "json", "csv", "sql", "parquet"),
        default="jsonl",
        help="file format (CSV and Parquet: --combined needs one entity)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="a directory (one file per dataset) or, with --combined, a file",
    )
    p.add_argument("--combined", action="store_true", help="every dataset in one file")
    p.add_argument("--include-replays", action="store_true", help="earlier replays too")
    p.set_defaults(fn=cmd_export)
