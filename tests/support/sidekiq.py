"""Cocov's side of the Sidekiq intake in tests: Ruby's ActiveJob and Sidekiq clients
(``tests/support/ruby/enqueue.rb``) writing into the test Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

#: The Ruby script that enqueues as Cocov's API does (see its header for the commands).
ENQUEUE_RB = Path(__file__).parent / "ruby" / "enqueue.rb"


def enqueue_with_ruby(redis_url: str, commands: list[dict[str, Any]]) -> list[str]:
    """Run the commands through Ruby's clients; return the jids written, in order."""
    result = subprocess.run(
        ["ruby", str(ENQUEUE_RB)],
        input=json.dumps(commands),
        env={"SIDEKIQ_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"enqueue.rb failed:\n{result.stderr}")
    jids: list[str] = json.loads(result.stdout)
    return jids


async def enqueue_ruby(redis_url: str, commands: list[dict[str, Any]]) -> list[str]:
    """:func:`enqueue_with_ruby` off the event loop."""
    return await asyncio.to_thread(enqueue_with_ruby, redis_url, commands)
