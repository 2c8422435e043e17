"""The generation service under load: dynamic batching against one request at a time.

Two servers run side by side, each `python -m course_utils.serve` in its own process with the
same model: the batching one and `--serial` (the unbatched service). The same clients (in this
process) send the same requests to both, `--clients` at once, each sending `--requests` one
after the other; the runs alternate between the servers (order swapped every repeat) and the
median over repeats is reported with the ratio. Both servers must return identical texts
(same seeds). Each server gets `--threads` torch threads (default 1), leaving the other core
to the clients. Nothing is asserted about speed: the script prints what it measured.

    python bench/serve.py                        # the active profile ($COURSE_PROFILE)
    python bench/serve.py --profile ci --requests 1 --repeats 1
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

from _common import make_parser, setup  # noqa: E402

from course_utils import artifacts  # noqa: E402
from course_utils.serve_tools import ServerProcess, load_test  # noqa: E402
from course_utils.timing import machine_info, time_interleaved  # noqa: E402

DEFAULT_REPEATS = {"ci": 1, "cpu": 3, "gpu": 3}
PROMPTS = ["中国", "新华社北京", "今天", "人民日报记者报道，", "经济发展", "我们"]
WORKLOADS = {  # name -> sampler settings (sampled ones seeded by the request's number)
    "sampled (temperature 0.8, top-k 40, top-p 0.9)": {"temperature": 0.8, "top_k": 40, "top_p": 0.9},
    "greedy": {"temperature": 0},
}


def body_maker(settings: dict, maxlength: int):
    def body(k: int) -> dict:
        return {"context": PROMPTS[k % len(PROMPTS)], "maxlength": maxlength, "samples": 1,
                "seed": k, **settings}
    return body


def bench(profile, clients: int, per_client: int, maxlength: int, repeats: int, threads: int) -> dict:
    artifacts.pretrained_lm(profile, progress=False)   # build it once here, not in both servers
    runs = {}
    with ServerProcess(profile.name, threads=threads) as batched, \
            ServerProcess(profile.name, "--serial", threads=threads) as serial:
        servers = {"batched": batched, "serial": serial}
        for workload, settings in WORKLOADS.items():
            body = body_maker(settings, maxlength)
            for server in servers.values():   # warm-up, untimed
                asyncio.run(load_test(server.url, body, min(clients, 4), 1))
            for name in servers:
                runs[workload, name] = []

            def load(name, workload=workload, body=body):
                result = asyncio.run(load_test(servers[name].url, body, clients, per_client))
                runs[workload, name].append(result)     # each load test times its own requests

            time_interleaved({name: lambda name=name: load(name) for name in servers}, repeats, warmup=0)
        health = batched.health
    return {"runs": runs, "health": health}


def summary(results: list[dict]) -> dict:
    med = lambda key: statistics.median(r[key] for r in results)
    chars = statistics.median(sum(len(t[0]) for t in r["texts"]) / r["seconds"] for r in results)
    return {"req/s": med("req/s"), "p50 ms": med("p50 ms"), "p95 ms": med("p95 ms"), "chars/s": chars}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/serve.py",
                         "Requests/s and p95 latency of the generation service with concurrent "
                         "clients: dynamic batching against one request at a time.")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    parser.add_argument("--maxlength", type=int, default=40, help="characters asked per request")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    profile, repeats = setup(parser, args, DEFAULT_REPEATS, clients=args.clients,
                             requests=args.requests, maxlength=args.maxlength)
    threads = args.threads or default_threads

    print("## Serving: dynamic batching against one request at a time\n")
    for key, value in machine_info().items():
        if key == "torch threads":
            value = f"{threads} in each server process (the clients run in this one)"
        print(f"- {key}: {value}")
    r = bench(profile, args.clients, args.requests, args.maxlength, repeats, threads)
    h = r["health"]
    print(f"- profile: {profile.name} ({h['parameters']:,} parameters, block_size={h['block_size']}, "
          f"vocabulary {h['vocab_size']:,})")
    print(f"- load: {args.clients} concurrent clients, each sending {args.requests} requests one after "
          f"the other (maxlength {args.maxlength}, 1 sample, seed = request number, prompts of "
          f"{min(map(len, PROMPTS))}-{max(map(len, PROMPTS))} characters); the two servers are two "
          f"processes, measured in turn, {repeats} repeat(s), median reported (one warm-up excluded)")
    print("- identical texts from both servers: "
          + str(all(a["texts"] == b["texts"] for w in WORKLOADS
                    for a, b in zip(r["runs"][(w, "batched")], r["runs"][(w, "serial")], strict=True)))
          + "\n")

    print("| workload | server | requests/s | p50 latency (ms) | p95 latency (ms) | characters/s |")
    print("|---|---|---:|---:|---:|---:|")
    ratios = []
    for workload in WORKLOADS:
        s = {name: summary(r["runs"][(workload, name)]) for name in ("serial", "batched")}
        for name, row in s.items():
            print(f"| {workload} | {name} | {row['req/s']:.1f} | {row['p50 ms']:,.0f} | "
                  f"{row['p95 ms']:,.0f} | {row['chars/s']:,.0f} |")
        ratios.append(f"ratio batched / serial at {args.clients} clients, {workload}: throughput "
                      f"{s['batched']['req/s'] / s['serial']['req/s']:.2f}x, p95 latency "
                      f"{s['batched']['p95 ms'] / s['serial']['p95 ms']:.2f}x")
    print("\n" + "\n".join(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
