#!/usr/bin/python3
"""Solve a problem with Arbor's planner from Python.

Uses Debian's python3-grpcio and the stubs the build generates into build/python:

    build/bin/arbor up &            # or any running mesh with a planner
    /usr/bin/python3 examples/python/solve.py --planner 127.0.0.1:50081 "4 9 10 13"

Prints every event as it arrives, then the result; exits 0 when a result came back.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("ARBOR_PYTHON_STUBS",
                                  os.path.join(HERE, "..", "..", "build", "python")))

import grpc  # noqa: E402
from arbor.v1 import planner_pb2, planner_pb2_grpc  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--planner", default="127.0.0.1:50081")
    parser.add_argument("--preset", default="game24")
    parser.add_argument("--breadth", type=int, default=2)
    parser.add_argument("--proposals", type=int, default=3)
    parser.add_argument("--root_proposals", type=int, default=0,
                        help="proposals for the root (0: --proposals)")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--max_thought_tokens", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    request = planner_pb2.SolveRequest(
        problem=args.problem,
        preset=args.preset,
        search=planner_pb2.SearchSpec(
            bfs=planner_pb2.Bfs(breadth=args.breadth,
                                proposals_per_node=args.proposals,
                                root_proposals=args.root_proposals,
                                depth=args.depth),
            generation=planner_pb2.GenerationSettings(
                max_thought_tokens=args.max_thought_tokens)))
    with grpc.insecure_channel(args.planner) as channel:
        stub = planner_pb2_grpc.PlannerStub(channel)
        result = None
        try:
            for event in stub.Solve(request, timeout=args.timeout):
                kind = event.WhichOneof("event")
                if kind == "node_created":
                    n = event.node_created
                    print(f"created node {n.id} (parent {n.parent_id}, depth {n.depth})")
                elif kind == "node_scored":
                    print(f"scored  node {event.node_scored.id}: {event.node_scored.score:.3f}")
                elif kind == "node_pruned":
                    print(f"pruned  node {event.node_pruned.id}")
                elif kind == "answer_found":
                    print(f"answer found: {event.answer_found!r}")
                elif kind == "progress":
                    print(f"progress: {event.progress.nodes} nodes, "
                          f"{event.progress.tokens_generated} tokens generated")
                elif kind == "result":
                    result = event.result
        except grpc.RpcError as e:
            print(f"Solve failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    if result is None:
        print("no result", file=sys.stderr)
        return 1
    c = result.counts
    print(f"result: task {result.task_id}, solved={result.solved}, "
          f"best path {list(result.best_path)}, score {result.score:.3f}")
    print(f"counts: {c.nodes} nodes, {c.tokens_generated} generated, "
          f"{c.tokens_prefilled} prefilled, {c.tokens_reused} reused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
