"""`scripts/preflight.sh`: the preflight's rows for a named stack, or its permission documents.

scripts/preflight.sh --stack prod                  every check, one row each; exit 1 on a failure
scripts/preflight.sh permissions --stack prod      write permissions/prod/: RBAC and RAM policy
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

import stack_config
from preflight.checks import Result, failed, stack_owner, stack_rows, table
from preflight.needs import stack_needs
from preflight.permissions import PLACEHOLDER_SUBJECT, Subject, SubjectError, ram_policy, rbac_yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _stack_config(stack: str) -> stack_config.StackConfig:
    """The stack's config with its secrets, read through scripts/pulumi.sh (its backend and
    passphrase rules apply)."""
    listing = subprocess.run(
        [str(PROJECT_DIR / "scripts" / "pulumi.sh"), "config", "--json", "--show-secrets", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        sys.stderr.write(listing.stderr)
        raise SystemExit(f"preflight: could not read stack {stack}'s config (above)")
    return stack_config.from_config_json(stack, json.loads(listing.stdout or "{}"))


def check(stack: str) -> int:
    config = _stack_config(stack)
    needs = stack_needs(config.gateway)
    if not needs:
        print(f"stack {stack} talks to no Kubernetes API: nothing to check")
        return 0
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["name"]
    rows = stack_rows(needs, dict(config.kubeconfigs), owner=stack_owner(stack, project))
    print(table(rows))
    failures = failed(rows)
    not_run = [r for r in rows if r.result is Result.NOT_RUN]
    print(
        f"\n{len(rows) - len(failures) - len(not_run)} passed, {len(failures)} failed, {len(not_run)} not run"
    )
    return 1 if failures else 0


def permissions(stack: str, subject: Subject, out: Path) -> int:
    # A fully qualified name (org/project/stack) has its file under the last part.
    stack_file = PROJECT_DIR / "stacks" / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"
    if not stack_file.is_file():
        print(f"error: stack {stack} has no stack file: {stack_file} is missing", file=sys.stderr)
        return 2
    config = stack_config.from_stack_file(stack, stack_file)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for needs in stack_needs(config.gateway):
        path = out / f"{needs.api}-rbac.yaml"
        path.write_text(rbac_yaml(needs, stack, subject))
        written.append(path)
    policy = ram_policy(config.gateway)
    if policy is not None:
        path = out / "ram-policy.json"
        path.write_text(json.dumps(policy, indent=2) + "\n")
        written.append(path)
    for path in written:
        print(path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/preflight.sh", description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", default="check", choices=("check", "permissions"))
    parser.add_argument("--stack", "-s", required=True)
    parser.add_argument(
        "--subject",
        help="permissions: who to bind the roles to (user:NAME, group:NAME, serviceaccount:NS/NAME)",
    )
    parser.add_argument(
        "--out", type=Path, help="permissions: the folder to write (default permissions/STACK)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            return check(args.stack)
        subject = Subject.parse(args.subject) if args.subject else PLACEHOLDER_SUBJECT
        out = args.out or PROJECT_DIR / "permissions" / args.stack.rsplit("/", 1)[-1]
        return permissions(args.stack, subject, out)
    except (stack_config.ConfigError, SubjectError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
