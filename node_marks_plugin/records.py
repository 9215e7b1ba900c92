"""`scripts/node-marks.sh`: the stacks' records on a cluster's nodes, and releasing a dead stack's.

    scripts/node-marks.sh list --kubeconfig FILE
    scripts/node-marks.sh release --kubeconfig FILE --stack PROJECT/STACK
        [--to PROJECT/STACK | --take-marks-off] [--selector LABEL=VALUE] [--yes]

A stack that `pulumi stack rm --force` removed, or that was renamed, leaves
its record on each node it marked, and the marks it names count as its own
for good: another stack never changes them. `release` drops that record (and,
with `--take-marks-off`, the marks only it names), or moves it to the stack's
new name (`--to`), one node at a time on the `resourceVersion` read, on every
node or those `--selector` picks. Without `--yes` it only prints what it
would do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node_marks_plugin.cluster import Cluster, NodeMarksError, api_client
from node_marks_plugin.marks import Owner, records, release_patch, show


def _cluster(kubeconfig: Path) -> Cluster:
    return Cluster(api_client(kubeconfig.read_text(), f"the kubeconfig {kubeconfig}"))


def list_records(cluster: Cluster) -> int:
    found = 0
    for name, node in sorted(cluster.nodes().items()):
        for key, (stack, marks) in records(node).items():
            found += 1
            shown = [f"{k}={v}" for k, v in sorted(marks.labels.items())] + [show(t) for t in marks.taints]
            named = stack if stack != key else f"(an earlier version's record, by key) {key}"
            print(f"{name}\t{named}\t{', '.join(shown) or 'no marks'}")
    if not found:
        print("no node carries a record of any stack")
    return 0


def release(
    cluster: Cluster,
    whose: str,
    take_marks_off: bool,
    yes: bool,
    *,
    to: Owner | None = None,
    selector: str = "",
) -> int:
    planned = {
        name: patch
        for name, node in sorted(cluster.nodes(label_selector=selector).items())
        if (patch := release_patch(node, whose, take_marks_off, to)) is not None
    }
    if not planned:
        print(f"no node carries a record of {whose}; nothing to release")
        return 1
    for name, patch in planned.items():
        taken = list(patch["metadata"].get("labels", {}))
        what = "the record" + (f" and the label(s) {', '.join(taken)}" if taken else "")
        what += " and its taints" if "spec" in patch else ""
        what += f", to {to.name}" if to is not None else ""
        print(f"{'releasing' if yes else 'would release'} on node {name}: {what}")
    if not yes:
        print("Nothing changed. Check that the stack no longer exists (`pulumi stack ls --all`); then --yes.")
        return 0
    for name in planned:
        # Read afresh: another writer may have changed the node since the listing.
        cluster.patch_node(
            name, lambda node: release_patch(node, whose, take_marks_off, to), "releasing a record on"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/node-marks.sh", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every stack's record on every node")
    releasing = commands.add_parser("release", help="drop the record of a stack that no longer exists")
    for command in (listing, releasing):
        command.add_argument(
            "--kubeconfig", type=Path, required=True, help="an admin kubeconfig of the cluster"
        )
    releasing.add_argument(
        "--stack", required=True, help="PROJECT/STACK as `list` shows it, or the record's key"
    )
    how = releasing.add_mutually_exclusive_group()
    how.add_argument("--take-marks-off", action="store_true", help="also take off the marks only it names")
    how.add_argument("--to", help="PROJECT/STACK: move the record to a renamed stack instead")
    releasing.add_argument("--selector", default="", help="only the nodes with these labels (k=v,...)")
    releasing.add_argument("--yes", action="store_true", help="change the nodes (otherwise only say what)")
    args = parser.parse_args(argv)
    try:
        cluster = _cluster(args.kubeconfig)
        if args.command == "list":
            return list_records(cluster)
        to = None
        if args.to:
            project, _, stack = args.to.partition("/")
            if not stack:
                parser.error("--to takes PROJECT/STACK")
            to = Owner(project, stack)
        return release(cluster, args.stack, args.take_marks_off, args.yes, to=to, selector=args.selector)
    except (NodeMarksError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
