"""Benchmark records: one JSON object per line, appended as each is finished, so a command cut short keeps
everything done so far and its rerun can skip it."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def environment(device: torch.device) -> dict:
    """Where and when a record was measured."""
    return {"device": device_name(device), "torch": torch.__version__, "date": datetime.date.today().isoformat()}


def read_records(path: Path) -> list[dict]:
    """The records of a .jsonl file; a last line cut off by a kill is ignored."""
    if not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_record(path: Path, record: dict) -> None:
    with Path(path).open("a") as f:
        f.write(json.dumps(record) + "\n")
