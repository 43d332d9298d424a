"""``make sweep``: the one-step ``ner`` at every instances x ONNX Runtime threads on this host, side by side.

For each configuration (default: instances and threads in powers of two, and the CPU count, with instances x
threads <= the CPUs this process may use) a real tritonserver serves the build's ``ner`` alone with that many
instances of that many intra-op threads (plus the bulk lane's instance, as served), and the bench's gRPC clients
(:func:`~ner_triton.bench.peers.run_grpc`, 1 text per request) measure

* one client: p50 and p99 (a p99 above four times the p50 is a stall, not the sentences' spread), and
* ``load_clients`` clients (default 4 per CPU, at least 16): sent/s and p99 under load.

The table goes to ``benchmarks/sweep/latest.{json,md}`` with the host it was measured on (CPU model, flags, CPUs).
:func:`best` picks the configuration with the most sent/s under load among those without a stall at one client
(within 5% of the most, the lower one-client p50 wins). Who reads it:

* ``NER_INSTANCES=auto`` (:mod:`ner_triton.cpus`): on the host the table was measured on (same CPU model and
  count), the best configuration's instances and threads instead of one single-threaded instance per CPU;
* ``ner-capacity --instances N``: the measured ratio of the best N-instance row to the measured-instances row
  instead of the linear scaling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ner_triton.bench.peers import host_cpu_times, run_grpc, steal_pct
from ner_triton.cli import Command
from ner_triton.cpus import available_cpus, cpu_flags, cpu_model
from ner_triton.data import load_split
from ner_triton.errors import ConfigError
from ner_triton.repository.install import install_artifacts, served_settings
from ner_triton.repository.render import write_configs
from ner_triton.schema import ENSEMBLE
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.settings import data_source, default_data

log = logging.getLogger(__name__)

JSON_NAME = "latest.json"
# One-client p99 above this many p50s: a stall. Not 2: one sentence at a time, CoNLL-2003's short and long sentences
# alone spread p99 / p50 to 2.6-2.9 (the in-process peer and the engine in `make bench`, 2026-12-05), while the
# batcher's 500 ms idle wait gave 55x (docs/serving.md, "Batching").
STALL_RATIO = 4.0
NEAR_BEST = 0.95  # configurations within this share of the best sent/s count as equal: lower p50 wins


def grid(cpus: int) -> list[tuple[int, int]]:
    """(instances, threads) pairs: powers of two and ``cpus`` itself, at most ``cpus`` threads in all."""
    steps = sorted({2**k for k in range(cpus.bit_length()) if 2**k <= cpus} | {cpus})
    return [(i, t) for i in steps for t in steps if i * t <= cpus]


@dataclass(frozen=True)
class SweepSettings:
    artifacts: Path = Path("artifacts")
    data: str = field(default_factory=default_data)
    sentences: int = 400
    seed: int = 13
    configs: tuple[tuple[int, int], ...] = ()  # empty: grid(available CPUs)
    load_clients: int = 0  # 0: 4 per CPU, at least 16
    output: Path = Path("benchmarks/sweep")

    def resolved(self) -> SweepSettings:
        cpus = available_cpus()
        return replace(
            self,
            configs=self.configs or tuple(grid(cpus)),
            load_clients=self.load_clients or max(16, 4 * cpus),
        )


@dataclass(frozen=True)
class Row:
    instances: int
    threads: int
    sent_s: float  # under load
    load_p99_ms: float
    p50_ms: float  # one client
    p99_ms: float
    steal_pct: float | None

    @property
    def stalls(self) -> bool:
        return self.p99_ms > STALL_RATIO * self.p50_ms

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "stalls": self.stalls}


def best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row to serve: the most sent/s among rows without a stall at one client (all rows, when every row
    stalls); within :data:`NEAR_BEST` of the most, the lower one-client p50."""
    pool = [r for r in rows if not r["stalls"]] or rows
    if not pool:
        return None
    top = max(r["sent_s"] for r in pool)
    return min((r for r in pool if r["sent_s"] >= NEAR_BEST * top), key=lambda r: r["p50_ms"])


def _repository(settings: SweepSettings, instances: int, threads: int, root: Path) -> Path:
    """A repository of the build's ``ner`` alone at ``instances`` x ``threads`` (the other models removed: they
    would load for nothing)."""
    s = served_settings(settings.artifacts)
    s = replace(s, ner_instances=instances, batching=replace(s.batching, threads=threads))
    repo = root / f"repo-{instances}x{threads}"
    write_configs(s, repo)
    install_artifacts(s, settings.artifacts, repo)
    for entry in repo.iterdir():
        if entry.is_dir() and entry.name != ENSEMBLE:
            shutil.rmtree(entry)
    return repo


def measure(settings: SweepSettings, texts: list[str], instances: int, threads: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        repo = _repository(settings, instances, threads, Path(tmp))
        server = ServerSettings.on_free_ports(repo, Path(tmp) / "state")
        with TritonServer(server):
            host0 = host_cpu_times()
            one = run_grpc(server.grpc_url, ENSEMBLE, ENSEMBLE, texts, 1)
            load = run_grpc(server.grpc_url, ENSEMBLE, ENSEMBLE, texts, settings.load_clients)
            steal = steal_pct(host0, host_cpu_times())
    return Row(instances, threads, load.throughput_sps, load.p99_ms, one.p50_ms, one.p99_ms, steal)


def sweep(settings: SweepSettings, command: str = "make sweep") -> Path:
    """Measure every configuration; write ``latest.json`` / ``latest.md`` into ``settings.output``."""
    settings = settings.resolved()
    texts = [s.text for s in load_split(data_source(settings.data), "test")]
    random.Random(settings.seed).shuffle(texts)
    texts = texts[: settings.sentences]
    t0 = time.perf_counter()
    rows = []
    for instances, threads in tqdm(settings.configs, desc="instances x threads", unit="config"):
        row = measure(settings, texts, instances, threads)
        log.info("%dx%d: %.1f sent/s at %d clients, one client p50 %.2f / p99 %.2f ms", instances, threads,
                 row.sent_s, settings.load_clients, row.p50_ms, row.p99_ms)  # fmt: skip
        rows.append(row.as_dict())
    result = {
        "command": command,
        "host": {"cpu_model": cpu_model(), "cpus": available_cpus(), "cpu_flags": cpu_flags()},
        "served_variant": served_settings(settings.artifacts).served.key,
        "artifacts": str(settings.artifacts),
        "sentences": len(texts),
        "seed": settings.seed,
        "load_clients": settings.load_clients,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
        "best": best(rows),
    }
    settings.output.mkdir(parents=True, exist_ok=True)
    path = settings.output / JSON_NAME
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    return path


def render_markdown(result: dict[str, Any]) -> str:
    host = result["host"]
    choice = result.get("best") or {}
    lines = [
        "# Instances x threads of `ner` on this host",
        "",
        f"`{result['command']}` - {host['cpus']} CPUs ({host['cpu_model']}; flags: "
        f"{', '.join(host['cpu_flags']) or 'none of AVX2/AVX-512/VNNI/AMX'}), served `{result['served_variant']}`, "
        f"{result['sentences']} CoNLL-2003 test sentences, 1 per request, {result['seconds']:.0f} s. Under load: "
        f"{result['load_clients']} clients. A one-client p99 above {STALL_RATIO:g}x its p50 is a stall.",
        "",
        "| instances x threads | sent/s under load | p99 ms under load | one client p50 ms | one client p99 ms "
        "| stall | steal % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        mark = " (best)" if r is choice or r == choice else ""
        lines.append(
            f"| {r['instances']}x{r['threads']}{mark} | {r['sent_s']:.1f} | {r['load_p99_ms']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {'yes' if r['stalls'] else 'no'} | "
            f"{'-' if r['steal_pct'] is None else r['steal_pct']} |"
        )
    lines.append("")
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any] | None:
    """A sweep report, None when there is none at ``path``; a clear error when it is not one."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "rows" not in data or "host" not in data:
        raise ConfigError(f"{path} is not a `make sweep` report (no rows/host): run `make sweep` to write one.")
    return data


def _configs(raw: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in raw.split(","):
        inst, _, thr = item.strip().partition("x")
        if not (inst.isdigit() and thr.isdigit() and int(inst) >= 1 and int(thr) >= 1):
            raise ConfigError(f"--configs item {item!r}: write INSTANCESxTHREADS, e.g. 1x2,2x1.")
        out.append((int(inst), int(thr)))
    return tuple(out)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path(os.environ.get("ARTIFACTS") or "artifacts"))
    parser.add_argument("--data", default=None, help="CoNLL-2003 directory (default: $DATA or the shared copy)")
    parser.add_argument("--sentences", type=int, default=SweepSettings.sentences)
    parser.add_argument("--configs", default=None, help="e.g. 1x1,1x2,2x1 (default: the grid for this host's CPUs)")
    parser.add_argument("--load-clients", type=int, default=0, help="clients under load (default: 4 per CPU, >= 16)")
    parser.add_argument("--output", type=Path, default=SweepSettings.output)


def _run(args: argparse.Namespace) -> int:
    settings = SweepSettings(artifacts=args.artifacts, sentences=args.sentences, output=args.output,
                             load_clients=args.load_clients)  # fmt: skip
    if args.data or os.environ.get("DATA"):
        settings = replace(settings, data=args.data or os.environ["DATA"])
    if args.configs:
        settings = replace(settings, configs=_configs(args.configs))
    path = sweep(settings, command=" ".join(["ner-sweep", *args.argv]))
    print(path.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


main = Command("ner-sweep", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
