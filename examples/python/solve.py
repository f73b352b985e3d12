#!/usr/bin/python3
"""Solve a problem with Arbor's planner from Python.

Uses Debian's python3-grpcio and the stubs the build generates into build/python:

    build/bin/arbor up &            # or any running mesh with a planner
    /usr/bin/python3 examples/python/solve.py --planner 127.0.0.1:50081 "4 9 10 13"

The planner's bearer token comes from --token_file, else $ARBOR_TOKEN_FILE, else $ARBOR_TOKEN,
else ~/.arbor/token (what `arbor up` writes); an --insecure planner needs none. The planner
serves TLS with the mesh's CA from --tls_dir, else $ARBOR_TLS_DIR, else ~/.arbor/tls (`none`:
plaintext, for `arbor up --insecure`).

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


def bearer_token(token_file):
    """The planner's bearer token, found as the `arbor` command finds it; None without one."""
    path = token_file or os.environ.get("ARBOR_TOKEN_FILE")
    if not path:
        if os.environ.get("ARBOR_TOKEN"):
            return os.environ["ARBOR_TOKEN"].strip()
        path = os.path.join(os.path.expanduser("~"), ".arbor", "token")
        if not os.path.exists(path):
            return None
    with open(path, encoding="ascii") as f:
        token = f.read().strip()
    if not token:
        raise SystemExit(f"token file {path} is empty")
    return token


def channel_for(address, tls_dir):
    """A channel to the planner: TLS trusting the mesh's CA, or plaintext without one."""
    tls_dir = tls_dir or os.environ.get("ARBOR_TLS_DIR")
    if not tls_dir:
        default = os.path.join(os.path.expanduser("~"), ".arbor", "tls")
        tls_dir = default if os.path.exists(os.path.join(default, "ca.crt")) else "none"
    if tls_dir == "none":
        return grpc.insecure_channel(address)
    with open(os.path.join(tls_dir, "ca.crt"), "rb") as f:
        ca = f.read()
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca))


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
    parser.add_argument("--tls_dir", default="",
                        help="the mesh's certificates (default: $ARBOR_TLS_DIR, ~/.arbor/tls; "
                             "none: plaintext)")
    parser.add_argument("--token_file", default="",
                        help="the planner's bearer token (default: $ARBOR_TOKEN_FILE, "
                             "$ARBOR_TOKEN, ~/.arbor/token)")
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
    with channel_for(args.planner, args.tls_dir) as channel:
        stub = planner_pb2_grpc.PlannerStub(channel)
        result = None
        try:
            token = bearer_token(args.token_file)
            metadata = [("authorization", f"Bearer {token}")] if token else None
            for event in stub.Solve(request, timeout=args.timeout, metadata=metadata):
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
