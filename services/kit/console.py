"""What every command-line tool shares: one-line errors a user can act on, and finding the
Kafka cluster a command talks to (--bootstrap, KAFKA_BOOTSTRAP_SERVERS, or the running
`testdata run`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import TypeVar

from services.kit.errors import UserError
from services.kit.ops.runfile import locate_bootstrap, run_file_path
from services.kit.settings import Settings, get_settings

T = TypeVar("T")
#: How long a command waits to reach a Kafka broker before saying it cannot.
BROKER_TIMEOUT_S = 15.0


async def reach_broker(step: Awaitable[T], bootstrap: str) -> T:
    """`step` (a client's start), or a UserError naming the broker it could not reach."""
    from aiokafka.errors import KafkaError  # here: `testdata --help` imports no Kafka client

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the UserError says it once
    try:
        return await asyncio.wait_for(step, BROKER_TIMEOUT_S)
    except TimeoutError as exc:
        raise UserError(
            f"cannot reach the Kafka broker at {bootstrap}: no answer in {BROKER_TIMEOUT_S:g} s "
            "(is it running? `testdata run` prints its address)"
        ) from exc
    except (KafkaError, OSError) as exc:
        raise UserError(
            f"cannot reach the Kafka broker at {bootstrap} ({type(exc).__name__}; is it "
            "running? `testdata run` prints its address)"
        ) from exc


def bootstrap_for(args: argparse.Namespace, settings: Settings) -> str:
    """The Kafka cluster a command talks to: --bootstrap, KAFKA_BOOTSTRAP_SERVERS, else the
    running `testdata run` (its run file; the command says so on stderr)."""
    found = locate_bootstrap(settings, getattr(args, "bootstrap", None))
    if found is None:
        raise UserError(
            f"no Kafka broker given and no testdata run is up ({run_file_path(settings.data_dir)} "
            "is absent): start one with `make run`, or name a cluster with --bootstrap or "
            "KAFKA_BOOTSTRAP_SERVERS"
        )
    if found.note:
        print(found.note, file=sys.stderr)
    from services.kit.runtime.kafka import use_security  # here: as KafkaError above

    return use_security(found.value, settings.kafka)


def bootstrap_arg(p: argparse.ArgumentParser) -> None:
    found = locate_bootstrap(get_settings())
    now = f"now {found.value}" if found is not None else "none is set or running now"
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else the running "
        f"`testdata run`'s broker, from {get_settings().data_dir}/run.json; {now})",
    )
